"""The particle force law, in numpy: the reference every other implementation is tested against.

docs/PARTICLES.md is the spec; this module follows it line by line.  The GLSL update step
(shaders/particle_step.glsl), used by the browser viewer and TouchDesigner, is tested against
:func:`step` in float32.

Conventions (all arrays float32):
- positions ``pos`` and homes ``home``: (N, 2), normalised image coordinates, x right and y
  down, the image spanning [0, 1] × [0, 1] (row 0 of a map or preview is y = 0);
- velocities ``vel``: (N, 2), image sizes per second;
- attention ``A``: (h, w) in 0..1, the selected word's map (see :func:`word_attention`).

Per update (one call of :func:`step`):

    A_p       = floor + (1 − floor) · bilinear(A, p)
    stability = attraction · A_p · (h − p)
    chaos     = wind · (1 − A_p) · curl_noise(p, τ)
    v ← v · (1 − drag) + dt · (w · stability + (1 − w) · chaos)
    p ← p + dt · v            (then reflected off the image border)

with w the phase weight (:func:`phase_weight`) and τ the noise clock (:func:`noise_clock`).
Functions over classes: the state is a small frozen record; every function is pure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .errors import UserError


class ParticleError(UserError, ValueError):
    """A particle parameter out of range; the message names it (the CLI prints it as one line)."""


# -- curl noise constants (docs/PARTICLES.md, "Curl noise"); GLSL copies this table verbatim --
# Each row: direction angle (radians), spatial frequency, time harmonic (integer), amplitude, phase.
CURL_WAVES = np.array(
    [
        # angle   freq  harmonic  amp    phase
        [0.30, 1.00, 1.0, 0.50, 0.00],
        [1.90, 1.31, 2.0, 0.40, 1.70],
        [3.70, 1.73, 3.0, 0.33, 4.10],
        [5.10, 2.29, 5.0, 0.27, 2.60],
        [0.95, 3.07, 7.0, 0.21, 5.30],
        [2.75, 4.13, 11.0, 0.16, 0.90],
    ],
    dtype=np.float32,
)
TWO_PI = np.float32(2.0 * math.pi)


@dataclass(frozen=True)
class ParticleParams:
    """Every knob of the law, with defaults that look good at 60 updates per second."""

    count: int = 65536  # particles (the GPU keeps them in a square texture: 256 × 256)
    attraction: float = 8.0  # spring strength towards home, 1/s², scaled by attention
    wind: float = 1.5  # curl-noise force where attention is low, image sizes/s²
    drag: float = 0.08  # fraction of velocity lost per update (0 = none, 1 = all)
    dt: float = 1.0 / 60.0  # seconds per update
    noise_scale: float = 3.0  # noise cells across the image
    noise_speed: float = 0.05  # noise-clock cycles per second (the flow loops every 1/speed s)
    attention_floor: float = 0.1  # minimum attention, so every particle finds home in the end
    phase_gain: tuple[float, float, float] = (0.0, 0.7, 1.0)  # w for (noise, structure, detail)

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ParticleError(f"particle count must be at least 1, got {self.count}")
        if not 0.0 <= self.drag <= 1.0:
            raise ParticleError(f"drag must be within 0..1, got {self.drag}")
        if not 0.0 <= self.attention_floor <= 1.0:
            raise ParticleError(f"attention_floor must be within 0..1, got {self.attention_floor}")
        if len(self.phase_gain) != 3:
            raise ParticleError(f"phase_gain needs 3 numbers (noise, structure, detail), got {self.phase_gain}")

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["phase_gain"] = list(self.phase_gain)
        return d


@dataclass(frozen=True, eq=False)
class ParticleState:
    home: np.ndarray  # (N, 2) float32
    pos: np.ndarray  # (N, 2) float32
    vel: np.ndarray  # (N, 2) float32
    time: float = 0.0  # seconds simulated so far (float64 on the host)


# -- initial state ------------------------------------------------------------------------
def grid_homes(count: int, seed: int = 0) -> np.ndarray:
    """Homes on a jittered square grid covering the image: one per cell, deterministic per seed.

    The grid has ceil(sqrt(count)) cells a side; cells are filled row by row, so a square count
    (the GPU's texture) covers the image evenly.
    """
    side = max(1, math.ceil(math.sqrt(count)))
    idx = np.arange(count)
    cell = np.stack([idx % side, idx // side], axis=1).astype(np.float64)
    jitter = np.random.default_rng(seed).random((count, 2))
    return ((cell + jitter) / side).astype(np.float32)


def init_particles(count: int, seed: int = 0, scatter: bool = True) -> ParticleState:
    """A fresh state: homes on the grid; positions scattered uniformly (chaos) or at home."""
    home = grid_homes(count, seed)
    if scatter:
        pos = np.random.default_rng(seed + 1).random((count, 2)).astype(np.float32)
    else:
        pos = home.copy()
    return ParticleState(home=home, pos=pos, vel=np.zeros_like(home), time=0.0)


def glsl_wave_table() -> str:
    """CURL_WAVES as the GLSL constants the shader carries (directions pre-rounded to float32).

    Two vec3 arrays, since GLSL ES 3.00 (WebGL2) has no arrays of arrays.
    tests/test_glsl_particles.py checks the shader holds exactly this text, so the table is
    written once, here.
    """
    geometry, timing = [], []
    for angle, freq, harmonic, amp, phase in CURL_WAVES:
        dx, dy = np.float32(math.cos(angle)), np.float32(math.sin(angle))
        geometry.append("    vec3(" + ", ".join(_glsl_float(v) for v in (dx, dy, freq)) + ")")
        timing.append("    vec3(" + ", ".join(_glsl_float(v) for v in (harmonic, amp, phase)) + ")")
    n = len(CURL_WAVES)
    return (
        f"// (direction x, direction y, frequency) per wave\nconst vec3 CURL_GEOMETRY[{n}] = vec3[{n}](\n"
        + ",\n".join(geometry)
        + f"\n);\n// (time harmonic, amplitude, phase) per wave\nconst vec3 CURL_TIMING[{n}] = vec3[{n}](\n"
        + ",\n".join(timing)
        + "\n);"
    )


def _glsl_float(v) -> str:
    text = f"{float(np.float32(v)):.9g}"  # 9 significant digits round-trip any float32
    return text if any(c in text for c in ".e") else text + ".0"


# -- the pieces of the law ------------------------------------------------------------------
def noise_clock(time: float, noise_speed: float) -> np.float32:
    """τ = frac(time · noise_speed), computed in float64 then rounded to float32.

    Wrapping on the host keeps the arguments of sin/cos small, so GPUs (whose sin loses
    precision for large arguments) agree with numpy no matter how long a show runs.
    """
    return np.float32((float(time) * float(noise_speed)) % 1.0)


def curl_noise(pos: np.ndarray, tau, scale: float) -> np.ndarray:
    """Divergence-free 2-D flow: the rotated gradient of a sum of travelling sine waves.

    ψ(q) = Σ_k a_k / (2π f_k) · sin θ_k,   θ_k = 2π (f_k (d_k · q) + n_k τ) + φ_k,   q = scale · p
    curl = (∂ψ/∂q_y, −∂ψ/∂q_x) = Σ_k a_k cos θ_k · (d_k.y, −d_k.x)

    No hashes and no tables beyond CURL_WAVES, so float32 on CPU and GPU agree closely.
    """
    p = np.asarray(pos, dtype=np.float32)
    q = p * np.float32(scale)
    tau = np.float32(tau)
    out = np.zeros_like(q)
    for angle, freq, harmonic, amp, phase in CURL_WAVES:
        dx, dy = np.float32(math.cos(angle)), np.float32(math.sin(angle))
        theta = TWO_PI * (freq * (q[:, 0] * dx + q[:, 1] * dy) + harmonic * tau) + phase
        c = amp * np.cos(theta, dtype=np.float32)
        out[:, 0] += c * dy
        out[:, 1] -= c * dx
    return out


def sample_bilinear(image: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Bilinear sample of a (h, w) map at normalised positions, texel centres at (i + 0.5) / w.

    Same rule as GL's LINEAR filter with CLAMP_TO_EDGE, written out so the GPU side can do it
    with texelFetch and match exactly (hardware filtering rounds the weights to 8 bits).
    """
    img = np.asarray(image, dtype=np.float32)
    h, w = img.shape
    p = np.asarray(pos, dtype=np.float32)
    x = p[:, 0] * np.float32(w) - np.float32(0.5)
    y = p[:, 1] * np.float32(h) - np.float32(0.5)
    x0f, y0f = np.floor(x), np.floor(y)
    fx, fy = x - x0f, y - y0f
    x0 = np.clip(x0f.astype(np.int64), 0, w - 1)
    y0 = np.clip(y0f.astype(np.int64), 0, h - 1)
    x1 = np.clip(x0f.astype(np.int64) + 1, 0, w - 1)
    y1 = np.clip(y0f.astype(np.int64) + 1, 0, h - 1)
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def phase_weight(phase_weights, gain=(0.0, 0.7, 1.0)) -> float:
    """w = gain · (noise, structure, detail) weights: how much stability rules over chaos."""
    return float(sum(float(g) * float(x) for g, x in zip(gain, phase_weights)))


def word_attention(maps: np.ndarray, word: int) -> np.ndarray:
    """One word's map scaled to 0..1 by its own peak (DAAM's normalisation), float32 (h, w).

    Pass a frame's ``cumulative`` maps (smooth; the viewer's default) or its per-step ``maps``.
    """
    m = np.asarray(maps[word], dtype=np.float32)
    peak = float(m.max()) if m.size else 0.0
    return m / np.float32(peak) if peak > 0 else np.zeros_like(m)


# -- one update -------------------------------------------------------------------------------
def step(state: ParticleState, attention: np.ndarray, w_phase: float, params: ParticleParams = ParticleParams()) -> ParticleState:
    """Advance every particle by one update of ``params.dt`` seconds (docs/PARTICLES.md)."""
    f32 = np.float32
    pos, vel, home = state.pos, state.vel, state.home
    tau = noise_clock(state.time, params.noise_speed)
    floor = f32(params.attention_floor)
    a = floor + (f32(1) - floor) * sample_bilinear(attention, pos)
    a = a[:, None]
    stability = f32(params.attraction) * a * (home - pos)
    chaos = f32(params.wind) * (f32(1) - a) * curl_noise(pos, tau, params.noise_scale)
    w = f32(w_phase)
    force = w * stability + (f32(1) - w) * chaos
    vel = vel * (f32(1) - f32(params.drag)) + f32(params.dt) * force
    pos = pos + f32(params.dt) * vel
    pos, vel = reflect(pos, vel)
    return replace(state, pos=pos.astype(np.float32), vel=vel.astype(np.float32), time=state.time + params.dt)


def reflect(pos: np.ndarray, vel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep particles in the image: a particle past an edge is put back inside and bounces."""
    inside = np.clip(pos, 0.0, 1.0).astype(np.float32)
    hit = inside != pos
    bounced = np.where(hit, -vel, vel).astype(np.float32)
    return inside, bounced


def advance(state: ParticleState, attention: np.ndarray, w_phase: float, params: ParticleParams = ParticleParams(), updates: int = 1) -> ParticleState:
    """``updates`` steps under the same attention map and phase weight."""
    for _ in range(updates):
        state = step(state, attention, w_phase, params)
    return state


# -- colour and drawing (offline renders) -----------------------------------------------------
def particle_colors(preview: np.ndarray, home: np.ndarray) -> np.ndarray:
    """Each particle's colour: the preview pixel at its home (nearest), uint8 (N, 3).

    A particle carries its pixel, so the image appears as particles settle home.
    """
    img = np.asarray(preview)
    h, w = img.shape[:2]
    ix = np.clip((home[:, 0] * w).astype(np.int64), 0, w - 1)
    iy = np.clip((home[:, 1] * h).astype(np.int64), 0, h - 1)
    return img[iy, ix, :3].astype(np.uint8)


def render(pos: np.ndarray, colors: np.ndarray, width: int, height: int, background=(0, 0, 0)) -> np.ndarray:
    """Splat particles as single pixels onto a (height, width, 3) uint8 image.

    Pixels hit by several particles get their mean colour; empty pixels keep the background.
    """
    ix = np.clip((pos[:, 0] * width).astype(np.int64), 0, width - 1)
    iy = np.clip((pos[:, 1] * height).astype(np.int64), 0, height - 1)
    flat = iy * width + ix
    sums = np.zeros((height * width, 3), np.float64)
    np.add.at(sums, flat, colors.astype(np.float64))
    counts = np.bincount(flat, minlength=height * width).astype(np.float64)
    out = np.empty((height * width, 3), np.float64)
    out[:] = np.asarray(background, np.float64)
    hit = counts > 0
    out[hit] = sums[hit] / counts[hit, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(height, width, 3)
