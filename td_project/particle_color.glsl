// TouchDesigner GLSL TOP: each particle's colour = the preview pixel at its home
// (docs/PARTICLES.md, "Colour and drawing").  Input 0 = homes (RGBA32F, home.xy, y down),
// input 1 = preview_image (TouchDesigner's bottom-up orientation, hence 1 − y).
layout(location = 0) out vec4 fragColor;

void main() {
    vec2 home = texelFetch(sTD2DInputs[0], ivec2(gl_FragCoord.xy), 0).xy;
    vec3 color = texture(sTD2DInputs[1], vec2(home.x, 1.0 - home.y)).rgb;
    fragColor = TDOutputSwizzle(vec4(color, 1.0));
}
