// TouchDesigner host for particle_step.glsl (GLSL TOP, pixel shader; TouchDesigner adds the
// #version line and declares sTD2DInputs / TDOutputSwizzle itself).
// GLSL TOP inputs:  0 = Feedback TOP (state: RGBA 32-bit float, pos.xy, vel.xy)
//                   1 = homes (RGBA 32-bit float, same resolution as the state)
//                   2 = attention (mono 32-bit float, the selected word's map, 0..1)
// Output: RGBA 32-bit float at the state's resolution; the uniforms are set on the
// GLSL TOP's Vectors page by td_project/build_network.py.

layout(location = 0) out vec4 fragColor;

// TouchDesigner's textures start at the bottom row: image row j is texel row (h - 1 - j).
float attentionTexel(ivec2 ij) {
    ivec2 size = textureSize(sTD2DInputs[2], 0);
    return texelFetch(sTD2DInputs[2], ivec2(ij.x, size.y - 1 - ij.y), 0).r;
}
ivec2 attentionSize() { return textureSize(sTD2DInputs[2], 0); }

vec4 particleStep(vec4 state, vec2 home);

void main() {
    ivec2 texel = ivec2(gl_FragCoord.xy);
    vec4 state = texelFetch(sTD2DInputs[0], texel, 0);
    vec2 home = texelFetch(sTD2DInputs[1], texel, 0).xy;
    fragColor = TDOutputSwizzle(particleStep(state, home));
}

