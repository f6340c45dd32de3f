// Particle morph on WebGL2: the update step is shaders/particle_step.glsl (via shaders.js),
// the same code TouchDesigner runs, tested against bridge/particles.py (docs/PARTICLES.md).
//
// State lives in two RGBA32F textures (pos.xy, vel.xy per texel) that are read and written in
// turn (ping-pong); homes in a third.  Drawing reads the state in a vertex shader, one point per
// particle, coloured by the preview image at the particle's home.

import { PARTICLE_STEP_FS } from "./shaders.js";

// Defaults of docs/PARTICLES.md (ParticleParams in bridge/particles.py).
export const DEFAULTS = Object.freeze({
  count: 65536,
  attraction: 8.0,
  wind: 1.5,
  drag: 0.08,
  dt: 1 / 60,
  noiseScale: 3.0,
  noiseSpeed: 0.05,
  attentionFloor: 0.1,
  phaseGain: [0.0, 0.7, 1.0],
});

// One triangle that covers the viewport; no vertex buffers needed.
const FULLSCREEN_VS = `#version 300 es
void main() {
  vec2 p = vec2(float((gl_VertexID << 1) & 2), float(gl_VertexID & 2));
  gl_Position = vec4(p * 2.0 - 1.0, 0.0, 1.0);
}`;

const DRAW_VS = `#version 300 es
precision highp float;
precision highp int;
precision highp sampler2D;
uniform sampler2D uState;
uniform sampler2D uHome;
uniform sampler2D uPreview;
uniform int uSide;
uniform float uPointSize;
out vec3 vColor;
void main() {
  ivec2 t = ivec2(gl_VertexID % uSide, gl_VertexID / uSide);
  vec2 p = texelFetch(uState, t, 0).xy;
  vec2 h = texelFetch(uHome, t, 0).xy;
  vColor = texture(uPreview, h).rgb;  // preview uploaded top row first, so v = y
  gl_Position = vec4(p.x * 2.0 - 1.0, 1.0 - p.y * 2.0, 0.0, 1.0);  // y down in the image
  gl_PointSize = uPointSize;
}`;

const DRAW_FS = `#version 300 es
precision highp float;
in vec3 vColor;
uniform float uGain;
uniform float uAlpha;
out vec4 color;
void main() { color = vec4(vColor * uGain, uAlpha); }`;

/** The noise clock τ = frac(time · speed), in float64 like the reference, then float32. */
export function noiseClock(time, speed) {
  return Math.fround((time * speed) % 1.0);
}

/** w = phase_gain · (noise, structure, detail). */
export function phaseWeight(weights, gain = DEFAULTS.phaseGain) {
  return gain[0] * weights[0] + gain[1] * weights[1] + gain[2] * weights[2];
}

/** mulberry32: a tiny deterministic PRNG in [0, 1), good enough for jitter and scatter. */
function random(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A fresh state: uniform random positions anywhere in the image, zero velocity (count × 4). */
export function scatteredState(count, seed = 1) {
  const rand = random(seed);
  const state = new Float32Array(count * 4);
  for (let i = 0; i < count; i++) {
    state[4 * i] = rand();
    state[4 * i + 1] = rand();
  }
  return state;
}

/** Homes on a jittered square grid, one per cell (like grid_homes; its own small PRNG). */
export function gridHomes(count, seed = 1) {
  const side = Math.ceil(Math.sqrt(count));
  const rand = random(seed);
  const homes = new Float32Array(count * 2);
  for (let i = 0; i < count; i++) {
    homes[2 * i] = ((i % side) + rand()) / side;
    homes[2 * i + 1] = (Math.floor(i / side) + rand()) / side;
  }
  return homes;
}

function compile(gl, type, source) {
  const shader = gl.createShader(type);
  gl.shaderSource(shader, source);
  gl.compileShader(shader);
  if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) {
    throw new Error("shader compile failed: " + gl.getShaderInfoLog(shader));
  }
  return shader;
}

function program(gl, vs, fs) {
  const p = gl.createProgram();
  gl.attachShader(p, compile(gl, gl.VERTEX_SHADER, vs));
  gl.attachShader(p, compile(gl, gl.FRAGMENT_SHADER, fs));
  gl.linkProgram(p);
  if (!gl.getProgramParameter(p, gl.LINK_STATUS)) throw new Error("program link failed: " + gl.getProgramInfoLog(p));
  const uniforms = {};
  const n = gl.getProgramParameter(p, gl.ACTIVE_UNIFORMS);
  for (let i = 0; i < n; i++) {
    const name = gl.getActiveUniform(p, i).name;
    uniforms[name] = gl.getUniformLocation(p, name);
  }
  return { program: p, uniforms };
}

function floatTexture(gl, internal, format, w, h, data) {
  const tex = gl.createTexture();
  gl.bindTexture(gl.TEXTURE_2D, tex);
  gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.NEAREST);
  gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
  gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
  gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
  gl.texImage2D(gl.TEXTURE_2D, 0, internal, w, h, 0, format, gl.FLOAT, data);
  return tex;
}

export class ParticleSim {
  /** `side` × `side` particles on a WebGL2 context with EXT_color_buffer_float.
   *  `stepSource`/`samplers` swap in another host's update shader (the tests run the
   *  TouchDesigner variant this way, with its sampler names). */
  constructor(gl, side, { stepSource = PARTICLE_STEP_FS, samplers = ["uState", "uHome", "uAttention"] } = {}) {
    if (!gl.getExtension("EXT_color_buffer_float")) {
      throw new Error("this browser cannot render to float textures (EXT_color_buffer_float); the particle morph is off");
    }
    this.gl = gl;
    this.side = side;
    this.count = side * side;
    this.time = 0;  // seconds simulated, float64
    this.stepProgram = program(gl, FULLSCREEN_VS, stepSource);
    this.samplers = samplers;
    this.drawProgram = program(gl, DRAW_VS, DRAW_FS);
    this.states = [0, 1].map(() => floatTexture(gl, gl.RGBA32F, gl.RGBA, side, side, null));
    this.fbos = this.states.map((tex) => {
      const fbo = gl.createFramebuffer();
      gl.bindFramebuffer(gl.FRAMEBUFFER, fbo);
      gl.framebufferTexture2D(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0, gl.TEXTURE_2D, tex, 0);
      return fbo;
    });
    gl.bindFramebuffer(gl.FRAMEBUFFER, null);
    this.current = 0;
    this.home = floatTexture(gl, gl.RGBA32F, gl.RGBA, side, side, null);
    this.attention = floatTexture(gl, gl.R32F, gl.RED, 1, 1, new Float32Array([0]));
    this.preview = gl.createTexture();
    this.setPreview(new Uint8Array([40, 40, 40]), 1, 1);
  }

  /** Homes as (x, y) pairs, count × 2 floats. */
  setHomes(homesXY) {
    const rgba = new Float32Array(this.count * 4);
    for (let i = 0; i < this.count; i++) {
      rgba[4 * i] = homesXY[2 * i];
      rgba[4 * i + 1] = homesXY[2 * i + 1];
    }
    this._upload(this.home, rgba);
  }

  /** State as (pos.x, pos.y, vel.x, vel.y) per particle, count × 4 floats; time in seconds. */
  setState(stateXYVV, time = 0) {
    this._upload(this.states[this.current], stateXYVV);
    this.time = time;
  }

  _upload(tex, rgba) {
    const gl = this.gl;
    gl.bindTexture(gl.TEXTURE_2D, tex);
    gl.texSubImage2D(gl.TEXTURE_2D, 0, 0, 0, this.side, this.side, gl.RGBA, gl.FLOAT, rgba);
  }

  /** The selected word's map, 0..1, row 0 at the top: Float32Array of w × h. */
  setAttention(data, w, h) {
    const gl = this.gl;
    gl.bindTexture(gl.TEXTURE_2D, this.attention);
    gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.R32F, w, h, 0, gl.RED, gl.FLOAT, data);
  }

  /** Preview RGB8, row 0 at the top: Uint8Array of w × h × 3. */
  setPreview(rgb, w, h) {
    const gl = this.gl;
    gl.bindTexture(gl.TEXTURE_2D, this.preview);
    gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGB8, w, h, 0, gl.RGB, gl.UNSIGNED_BYTE, rgb);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.NEAREST);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
  }

  /** One update of docs/PARTICLES.md with parameters `p` (DEFAULTS' names) and phase weight `w`. */
  step(p, w) {
    const gl = this.gl;
    const { program: prog, uniforms: u } = this.stepProgram;
    const src = this.current, dst = 1 - this.current;
    gl.useProgram(prog);
    gl.bindFramebuffer(gl.FRAMEBUFFER, this.fbos[dst]);
    gl.viewport(0, 0, this.side, this.side);
    gl.disable(gl.BLEND);
    [this.states[src], this.home, this.attention].forEach((tex, unit) => {
      gl.activeTexture(gl.TEXTURE0 + unit);
      gl.bindTexture(gl.TEXTURE_2D, tex);
      gl.uniform1i(gl.getUniformLocation(prog, this.samplers[unit]), unit);
    });
    gl.uniform1f(u.uAttraction, p.attraction);
    gl.uniform1f(u.uWind, p.wind);
    gl.uniform1f(u.uDrag, p.drag);
    gl.uniform1f(u.uDt, p.dt);
    gl.uniform1f(u.uNoiseScale, p.noiseScale);
    gl.uniform1f(u.uTau, noiseClock(this.time, p.noiseSpeed));
    gl.uniform1f(u.uAttentionFloor, p.attentionFloor);
    gl.uniform1f(u.uPhaseWeight, w);
    gl.drawArrays(gl.TRIANGLES, 0, 3);
    gl.bindFramebuffer(gl.FRAMEBUFFER, null);
    this.current = dst;
    this.time += p.dt;
  }

  /** The current state, count × 4 floats (pos.x, pos.y, vel.x, vel.y). */
  readState() {
    const gl = this.gl;
    const out = new Float32Array(this.count * 4);
    gl.bindFramebuffer(gl.FRAMEBUFFER, this.fbos[this.current]);
    gl.readPixels(0, 0, this.side, this.side, gl.RGBA, gl.FLOAT, out);
    gl.bindFramebuffer(gl.FRAMEBUFFER, null);
    return out;
  }

  /** Draw the particles into the default framebuffer (the canvas), blended over black.
   *  Plain "over" blending keeps each particle's colour true where many gather;
   *  `aspect` (image width / height) letterboxes the image inside the canvas. */
  draw({ pointSize = 1.5, gain = 1.0, alpha = 0.85, aspect = 1 } = {}) {
    const gl = this.gl;
    const { program: prog, uniforms: u } = this.drawProgram;
    gl.bindFramebuffer(gl.FRAMEBUFFER, null);
    gl.viewport(0, 0, gl.drawingBufferWidth, gl.drawingBufferHeight);
    gl.clearColor(0, 0, 0, 1);
    gl.clear(gl.COLOR_BUFFER_BIT);
    const W = gl.drawingBufferWidth, H = gl.drawingBufferHeight;
    const s = Math.min(W / aspect, H);
    gl.viewport(Math.round((W - s * aspect) / 2), Math.round((H - s) / 2), Math.round(s * aspect), Math.round(s));
    gl.useProgram(prog);
    const textures = [["uState", this.states[this.current]], ["uHome", this.home], ["uPreview", this.preview]];
    textures.forEach(([name, tex], unit) => {
      gl.activeTexture(gl.TEXTURE0 + unit);
      gl.bindTexture(gl.TEXTURE_2D, tex);
      gl.uniform1i(u[name], unit);
    });
    gl.uniform1i(u.uSide, this.side);
    gl.uniform1f(u.uPointSize, pointSize);
    gl.uniform1f(u.uGain, gain);
    gl.uniform1f(u.uAlpha, alpha);
    gl.enable(gl.BLEND);
    gl.blendFunc(gl.SRC_ALPHA, gl.ONE_MINUS_SRC_ALPHA);
    gl.drawArrays(gl.POINTS, 0, this.count);
    gl.disable(gl.BLEND);
  }
}
