#!/usr/bin/env python3
"""Particle update speed: the numpy reference (offline renders) and the GLSL step in WebGL2.

Same law, same inputs, side by side in one run, for several particle counts:

  numpy      bridge.particles.step on the CPU (what timelapse renders use), updates/s
  webgl2     shaders/particle_step.glsl through web/particles.js in headless Chromium, updates/s
             (on a machine without a GPU this is SwiftShader, Chromium's software renderer;
             with a GPU, run Chromium without --disable-gpu to measure the real thing)
  budget     how many particles each keeps at 60 updates per second (interpolated)

Usage:
  python bench/particles.py [--counts 4096,16384,65536] [--seconds 2] [--no-browser]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bridge import particles as P  # noqa: E402

BROWSER_JS = """
async ({side, seconds}) => {
  const { ParticleSim, gridHomes, scatteredState, DEFAULTS } = await import('/particles.js');
  const gl = document.createElement('canvas').getContext('webgl2');
  const sim = new ParticleSim(gl, side);
  sim.setHomes(gridHomes(side * side, 1));
  sim.setState(scatteredState(side * side, 2), 0);
  const map = new Float32Array(64 * 64).map((_, i) => (i % 64) / 63);
  sim.setAttention(map, 64, 64);
  const px = new Float32Array(4);
  const sync = () => { gl.bindFramebuffer(gl.FRAMEBUFFER, sim.fbos[sim.current]); gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.FLOAT, px); };
  for (let k = 0; k < 5; k++) sim.step(DEFAULTS, 0.5);   // warm up: compile, allocate
  sync();
  let n = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < seconds * 1000) {
    for (let k = 0; k < 10; k++) sim.step(DEFAULTS, 0.5);
    sync();  // wait for the GPU (or SwiftShader) to finish, so the time is real
    n += 10;
  }
  const info = gl.getExtension('WEBGL_debug_renderer_info');
  const renderer = info ? gl.getParameter(info.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER);
  return { updates: n, seconds: (performance.now() - t0) / 1000, renderer };
}
"""


def numpy_rate(count: int, seconds: float) -> float:
    params = P.ParticleParams(count=count)
    state = P.init_particles(count, seed=2)
    attention = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))
    state = P.step(state, attention, 0.5, params)  # warm up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        state = P.step(state, attention, 0.5, params)
        n += 1
    return n / (time.perf_counter() - t0)


def browser_rates(counts, seconds):
    sys.path.insert(0, str(ROOT))
    from tests._browser import browser_page, static_server

    out = {}
    with static_server() as base, browser_page() as page:
        page.goto(base + "/__test__")
        for count in counts:
            side = math.ceil(math.sqrt(count))
            r = page.evaluate(BROWSER_JS, {"side": side, "seconds": seconds})
            out[count] = (r["updates"] / r["seconds"], r["renderer"])
    return out


def budget(rates: dict) -> str:
    """Particles at 60 updates/s, assuming cost ∝ count between the measured points."""
    best = max((c * r / 60 for c, r in rates.items()), default=0)
    return f"~{int(best):,}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--counts", default="4096,16384,65536", help="particle counts, comma-separated")
    ap.add_argument("--seconds", type=float, default=2.0, help="seconds per measurement")
    ap.add_argument("--no-browser", action="store_true", help="numpy only")
    args = ap.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",")]

    cpu = {c: numpy_rate(c, args.seconds) for c in counts}
    gpu = {}
    renderer = "-"
    if not args.no_browser:
        try:
            measured = browser_rates(counts, args.seconds)
            gpu = {c: r for c, (r, _) in measured.items()}
            renderer = next(iter(measured.values()))[1]
        except BaseException as exc:  # no Chromium/Playwright: numpy numbers still count
            print(f"webgl2: not measured ({str(exc).splitlines()[0]})")

    print(f"{'particles':>10} {'numpy upd/s':>12} {'webgl2 upd/s':>13} {'webgl2/numpy':>13}")
    for c in counts:
        g = gpu.get(c)
        print(f"{c:>10,} {cpu[c]:>12.1f} {g if g is None else round(g, 1)!s:>13} {'' if g is None else f'{g / cpu[c]:.1f}x':>13}")
    print(f"particles at 60 updates/s: numpy {budget(cpu)}, webgl2 {budget(gpu) if gpu else '-'} (renderer: {renderer})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
