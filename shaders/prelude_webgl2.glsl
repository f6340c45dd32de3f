#version 300 es
// WebGL2 host for particle_step.glsl: draw a full-viewport triangle into an RGBA32F texture the
// size of the particle state texture (ping-pong: read one state texture, write the other).
precision highp float;
precision highp int;
precision highp sampler2D;

uniform sampler2D uState;      // RGBA32F: pos.xy, vel.xy per particle
uniform sampler2D uHome;       // RGBA32F (or RG32F): home.xy per particle, same layout
uniform sampler2D uAttention;  // R32F: the selected word's map, 0..1, uploaded top row first

out vec4 outState;

// WebGL uploads the first row of data to t = 0, so texel row j is image row j.
float attentionTexel(ivec2 ij) { return texelFetch(uAttention, ij, 0).r; }
ivec2 attentionSize() { return textureSize(uAttention, 0); }

vec4 particleStep(vec4 state, vec2 home);

void main() {
    ivec2 texel = ivec2(gl_FragCoord.xy);
    outState = particleStep(texelFetch(uState, texel, 0), texelFetch(uHome, texel, 0).xy);
}

