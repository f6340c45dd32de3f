"""The GLSL particle update (shaders/) against the numpy reference (bridge/particles.py).

- WebGL2: the shader runs in real headless Chromium (SwiftShader) through web/particles.js, the
  viewer's own code; positions after N updates are compared with the reference.
- TouchDesigner: TouchDesigner itself cannot run here.  Its variant is compiled with
  glslangValidator against a stand-in header for the three names TouchDesigner injects
  (sTD2DInputs, TDOutputSwizzle, #version), and also *run* in Chromium with a WebGL2 stand-in
  of that header, attention uploaded bottom row first as a Script TOP's copyNumpyArray does.

Tolerance (docs/PARTICLES.md), in image sizes: after one update every particle within 1e-5;
after 60 updates 99.9 % of particles within 1e-4 and every particle within 1e-2 (a particle
that grazes the border can bounce on one side of the comparison and not the other).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess

import numpy as np
import pytest

from bridge import particles as P
from tests._browser import ROOT, browser_page, static_server

SHADERS = ROOT / "shaders"
SIDE = 64  # 4096 particles
UPDATES = 60
START_TIME = 7.3  # seconds: exercises the noise clock away from τ = 0

# What TouchDesigner puts before a GLSL TOP pixel shader, reduced to the names ours uses.
TD_STANDIN_HEADER_GLSLANG = """#version 460
// Stand-in for TouchDesigner's injected declarations (TouchDesigner is the true edge).
uniform sampler2D sTD2DInputs[3];
vec4 TDOutputSwizzle(vec4 c) { return c; }
"""
TD_STANDIN_HEADER_WEBGL2 = """#version 300 es
// Stand-in for TouchDesigner's injected declarations, in WebGL2 so the variant can run.
precision highp float;
precision highp int;
precision highp sampler2D;
uniform sampler2D sTD2DInputs[3];
vec4 TDOutputSwizzle(vec4 c) { return c; }
"""


def read(name: str) -> str:
    return (SHADERS / name).read_text(encoding="utf-8")


def test_shader_carries_the_reference_wave_table():
    assert P.glsl_wave_table() in read("particle_step.glsl")


def test_web_shader_module_is_generated_from_shaders():
    spec = importlib.util.spec_from_file_location("embed_web", SHADERS / "embed_web.py")
    embed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(embed)
    assert (ROOT / "web" / "shaders.js").read_text(encoding="utf-8") == embed.module_text(), (
        "web/shaders.js is stale: run `python shaders/embed_web.py`"
    )


def glslang() -> str:
    path = shutil.which("glslangValidator")
    if path is None:
        pytest.skip("glslangValidator is not installed (apt-get install glslang-tools)")
    return path


@pytest.mark.parametrize(
    "name, parts",
    [
        ("touchdesigner.frag", (TD_STANDIN_HEADER_GLSLANG, read("prelude_touchdesigner.glsl"), read("particle_step.glsl"))),
        ("webgl2.frag", (read("prelude_webgl2.glsl"), read("particle_step.glsl"))),
    ],
)
def test_each_host_variant_compiles_with_glslang(tmp_path, name, parts):
    source = tmp_path / name
    source.write_text("".join(parts), encoding="utf-8")
    result = subprocess.run([glslang(), str(source)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_glslang_rejects_a_broken_variant(tmp_path):
    """The compile check above can fail: a shader missing a host function is refused."""
    source = tmp_path / "broken.frag"
    source.write_text(TD_STANDIN_HEADER_GLSLANG + read("particle_step.glsl") + "void main() {}\n", encoding="utf-8")
    result = subprocess.run([glslang(), str(source)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "attentionSize" in result.stdout + result.stderr


def reference_inputs():
    count = SIDE * SIDE
    rng = np.random.default_rng(11)
    home = P.grid_homes(count, seed=3)
    pos = rng.random((count, 2)).astype(np.float32)
    vel = rng.normal(0.0, 0.3, (count, 2)).astype(np.float32)
    # Non-square and asymmetric, so a transposed or flipped map cannot pass.
    h, w = 24, 40
    yy, xx = np.mgrid[0:h, 0:w]
    attention = np.exp(-(((xx - 28) / 7.0) ** 2 + ((yy - 8) / 5.0) ** 2)).astype(np.float32)
    attention[18:, 2:10] = 0.8
    weights = [min(1.0, k / (UPDATES * 0.7)) for k in range(UPDATES)]  # chaos → stability
    return P.ParticleState(home, pos, vel, START_TIME), attention, weights


RUN_JS = """
async ({side, home, state, attention, aw, ah, weights, params, time, stepSource, samplers}) => {
  const { ParticleSim } = await import('/particles.js');
  const canvas = document.createElement('canvas');
  const gl = canvas.getContext('webgl2');
  if (!gl) throw new Error('no WebGL2');
  const options = stepSource ? { stepSource, samplers } : {};
  const sim = new ParticleSim(gl, side, options);
  sim.setHomes(new Float32Array(home));
  sim.setState(new Float32Array(state), time);
  sim.setAttention(new Float32Array(attention), aw, ah);
  const snapshots = [];
  weights.forEach((w, k) => {
    sim.step(params, w);
    if (k === 0 || k === weights.length - 1) snapshots.push(Array.from(sim.readState()));
  });
  return { snapshots, renderer: gl.getParameter(gl.RENDERER) };
}
"""

JS_PARAMS = {
    "attraction": 8.0, "wind": 1.5, "drag": 0.08, "dt": 1 / 60, "noiseScale": 3.0,
    "noiseSpeed": 0.05, "attentionFloor": 0.1, "phaseGain": [0.0, 0.7, 1.0],
}


@pytest.fixture(scope="module")
def gl_page():
    """One Chromium for the module's runs (a launch costs seconds on 2 cores)."""
    with static_server() as base, browser_page() as page:
        page.goto(base + "/__test__")
        yield page


def run_in_chromium(page, state, attention, weights, step_source=None, samplers=None, flip_attention=False):
    upload = attention[::-1] if flip_attention else attention
    args = {
        "side": SIDE,
        "home": state.home.ravel().tolist(),
        "state": np.concatenate([state.pos, state.vel], axis=1).ravel().tolist(),
        "attention": np.ascontiguousarray(upload).ravel().tolist(),
        "aw": attention.shape[1],
        "ah": attention.shape[0],
        "weights": weights,
        "params": JS_PARAMS,
        "time": state.time,
        "stepSource": step_source,
        "samplers": samplers,
    }
    result = page.evaluate(RUN_JS, args)
    assert not page.errors, page.errors
    snaps = [np.asarray(s, np.float32).reshape(SIDE * SIDE, 4) for s in result["snapshots"]]
    return snaps, result["renderer"]


def reference_run(state, attention, weights):
    params = P.ParticleParams(count=SIDE * SIDE)
    assert params.to_dict()["phase_gain"] == JS_PARAMS["phaseGain"]  # the JS defaults mirror these
    first = None
    for k, w in enumerate(weights):
        state = P.step(state, attention, w, params)
        if k == 0:
            first = state
    return first, state


def assert_matches_reference(snaps, first, last):
    gpu_first, gpu_last = snaps
    err1 = np.abs(gpu_first[:, :2] - first.pos).max()
    errv = np.abs(gpu_first[:, 2:] - first.vel).max()
    gapN = np.abs(gpu_last[:, :2] - last.pos).max(axis=1)
    assert err1 < 1e-5 and errv < 1e-4, (err1, errv)
    assert np.quantile(gapN, 0.999) < 1e-4, f"99.9 % position gap after {UPDATES} updates: {np.quantile(gapN, 0.999)}"
    assert gapN.max() < 1e-2, f"max position gap after {UPDATES} updates: {gapN.max()}"
    # The comparison has teeth: particles really moved, differently in different places.
    moved = np.abs(last.pos - first.pos).max(axis=1)
    assert np.median(moved) > 0.02


def test_webgl2_update_matches_the_numpy_reference(gl_page):
    state, attention, weights = reference_inputs()
    first, last = reference_run(state, attention, weights)
    snaps, _ = run_in_chromium(gl_page, state, attention, weights)
    assert_matches_reference(snaps, first, last)


def test_touchdesigner_variant_runs_and_matches_the_numpy_reference(gl_page):
    state, attention, weights = reference_inputs()
    first, last = reference_run(state, attention, weights)
    source = TD_STANDIN_HEADER_WEBGL2 + read("prelude_touchdesigner.glsl") + read("particle_step.glsl")
    samplers = ["sTD2DInputs[0]", "sTD2DInputs[1]", "sTD2DInputs[2]"]
    snaps, _ = run_in_chromium(gl_page, state, attention, weights, source, samplers, flip_attention=True)
    assert_matches_reference(snaps, first, last)


def test_a_flipped_attention_map_is_caught(gl_page):
    """Uploading the map the wrong way up (the classic TouchDesigner mistake) must fail the check."""
    state, attention, weights = reference_inputs()
    first, last = reference_run(state, attention, weights)
    snaps, _ = run_in_chromium(gl_page, state, attention, weights, flip_attention=True)
    with pytest.raises(AssertionError):
        assert_matches_reference(snaps, first, last)


def test_the_viewers_defaults_are_the_specs(gl_page):
    defaults = gl_page.evaluate("async () => ({...(await import('/particles.js')).DEFAULTS})")
    spec = P.ParticleParams().to_dict()
    names = {"count": "count", "attraction": "attraction", "wind": "wind", "drag": "drag", "dt": "dt",
             "noiseScale": "noise_scale", "noiseSpeed": "noise_speed", "attentionFloor": "attention_floor",
             "phaseGain": "phase_gain"}
    assert set(defaults) == set(names)
    for js, py in names.items():
        assert defaults[js] == pytest.approx(spec[py]), js
