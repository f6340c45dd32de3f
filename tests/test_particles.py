"""The numpy reference of the particle law (bridge/particles.py) against docs/PARTICLES.md."""

import math

import numpy as np
import pytest

from bridge import particles as P
from bridge.phases import PhaseSchedule


def spec_update_one(p, v, h, A, w, t, prm: P.ParticleParams):
    """docs/PARTICLES.md's update written out for one particle in plain float64 math: an
    independent oracle for bridge.particles.step."""
    tau = (t * prm.noise_speed) % 1.0
    hh, ww = A.shape
    x, y = p[0] * ww - 0.5, p[1] * hh - 0.5
    x0, y0 = math.floor(x), math.floor(y)
    fx, fy = x - x0, y - y0
    cx = lambda i: min(max(i, 0), ww - 1)  # noqa: E731
    cy = lambda j: min(max(j, 0), hh - 1)  # noqa: E731
    a00, a01 = A[cy(y0), cx(x0)], A[cy(y0), cx(x0 + 1)]
    a10, a11 = A[cy(y0 + 1), cx(x0)], A[cy(y0 + 1), cx(x0 + 1)]
    a = (a00 * (1 - fx) + a01 * fx) * (1 - fy) + (a10 * (1 - fx) + a11 * fx) * fy
    a = prm.attention_floor + (1 - prm.attention_floor) * a
    q = (p[0] * prm.noise_scale, p[1] * prm.noise_scale)
    curl = [0.0, 0.0]
    for angle, f, n, amp, phi in P.CURL_WAVES.tolist():
        d = (math.cos(angle), math.sin(angle))
        theta = 2 * math.pi * (f * (d[0] * q[0] + d[1] * q[1]) + n * tau) + phi
        curl[0] += amp * math.cos(theta) * d[1]
        curl[1] -= amp * math.cos(theta) * d[0]
    out_p, out_v = [], []
    for i in range(2):
        force = w * prm.attraction * a * (h[i] - p[i]) + (1 - w) * prm.wind * (1 - a) * curl[i]
        vi = v[i] * (1 - prm.drag) + prm.dt * force
        pi = p[i] + prm.dt * vi
        if pi < 0 or pi > 1:
            pi, vi = min(max(pi, 0.0), 1.0), -vi
        out_p.append(pi)
        out_v.append(vi)
    return out_p, out_v


def blob_map(h=24, w=32):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.exp(-(((xx - w * 0.6) / (w * 0.2)) ** 2 + ((yy - h * 0.4) / (h * 0.25)) ** 2)).astype(np.float32)


def test_step_matches_the_spec_written_out_per_particle():
    prm = P.ParticleParams(count=64)
    rng = np.random.default_rng(5)
    state = P.ParticleState(
        home=rng.random((64, 2)).astype(np.float32),
        pos=rng.uniform(-0.02, 1.02, (64, 2)).clip(0, 1).astype(np.float32),
        vel=rng.normal(0, 0.5, (64, 2)).astype(np.float32),
        time=12.34,
    )
    A = blob_map()
    for w in (0.0, 0.35, 1.0):
        new = P.step(state, A, w, prm)
        assert new.pos.dtype == np.float32 and new.vel.dtype == np.float32
        for i in range(64):
            p, v = spec_update_one(state.pos[i].tolist(), state.vel[i].tolist(), state.home[i].tolist(), A.astype(np.float64), w, state.time, prm)
            np.testing.assert_allclose(new.pos[i], p, atol=2e-6)
            np.testing.assert_allclose(new.vel[i], v, atol=2e-5)
        assert new.time == pytest.approx(state.time + prm.dt)


def test_curl_noise_is_divergence_free_and_loops_in_tau():
    rng = np.random.default_rng(0)
    p = rng.random((500, 2)).astype(np.float64)
    eps = 1e-4

    def field(q):
        return P.curl_noise(q.astype(np.float32), 0.3, 3.0).astype(np.float64)

    ex, ey = np.array([eps, 0.0]), np.array([0.0, eps])
    div = (field(p + ex)[:, 0] - field(p - ex)[:, 0] + field(p + ey)[:, 1] - field(p - ey)[:, 1]) / (2 * eps)
    # One component's derivative alone is large (~2π·scale·f·a); their sum must vanish.
    dudx = (field(p + ex)[:, 0] - field(p - ex)[:, 0]) / (2 * eps)
    assert np.abs(dudx).max() > 5.0
    assert np.abs(div).max() < 0.05 * np.abs(dudx).max()
    np.testing.assert_allclose(P.curl_noise(p, 0.0, 3.0), P.curl_noise(p, 1.0, 3.0), atol=2e-5)
    assert not np.allclose(P.curl_noise(p, 0.0, 3.0), P.curl_noise(p, 0.25, 3.0), atol=1e-2)
    mag = np.linalg.norm(P.curl_noise(p, 0.7, 3.0), axis=1)
    assert mag.max() <= P.CURL_WAVES[:, 3].sum() + 1e-5 and mag.mean() > 0.3


def test_noise_clock_wraps_on_the_host():
    assert P.noise_clock(0.0, 0.05) == 0.0
    assert P.noise_clock(25.0, 0.05) == pytest.approx(0.25)
    assert P.noise_clock(1e7 + 5.0, 0.05) == pytest.approx(0.25, abs=1e-6)  # a week-long show
    assert P.noise_clock(3.0, 0.05).dtype == np.float32


def test_bilinear_sampling_hits_texel_centres_interpolates_and_clamps():
    A = np.arange(12, dtype=np.float32).reshape(3, 4)  # A[j, i] = 4j + i: linear in both axes
    centres = np.array([[(i + 0.5) / 4, (j + 0.5) / 3] for j in range(3) for i in range(4)], np.float32)
    np.testing.assert_allclose(P.sample_bilinear(A, centres), A.ravel(), atol=1e-5)
    mid = np.array([[0.25, 0.5]], np.float32)  # x = 0.5 texels, y = 1 texel
    np.testing.assert_allclose(P.sample_bilinear(A, mid), [4 * 1 + 0.5], atol=1e-5)
    corners = np.array([[0.0, 0.0], [1.0, 1.0], [-0.5, 2.0]], np.float32)
    np.testing.assert_allclose(P.sample_bilinear(A, corners), [0.0, 11.0, 8.0], atol=1e-5)


def test_full_attention_with_stability_brings_every_particle_home():
    prm = P.ParticleParams(count=1024)
    state = P.init_particles(1024, seed=2)
    start = np.abs(state.pos - state.home).max()
    state = P.advance(state, np.ones((8, 8), np.float32), 1.0, prm, updates=600)
    assert start > 0.5
    assert np.abs(state.pos - state.home).max() < 1e-3
    assert np.abs(state.vel).max() < 1e-2


def test_no_attention_in_the_noise_phase_keeps_particles_swirling_inside_the_image():
    prm = P.ParticleParams(count=1024, attention_floor=0.0)
    state = P.init_particles(1024, seed=2, scatter=False)
    state = P.advance(state, np.zeros((8, 8), np.float32), 0.0, prm, updates=300)
    speed = np.linalg.norm(state.vel, axis=1)
    assert speed.mean() > 0.05  # still moving after 5 s
    assert np.abs(state.pos - state.home).mean() > 0.05  # and blown away from home
    assert state.pos.min() >= 0.0 and state.pos.max() <= 1.0


def test_attended_particles_settle_before_unattended_ones():
    prm = P.ParticleParams(count=4096)
    state = P.init_particles(4096, seed=9)
    A = blob_map(32, 32)
    w = P.phase_weight((0.0, 1.0, 0.0), prm.phase_gain)
    state = P.advance(state, A, w, prm, updates=240)
    attended = P.sample_bilinear(A, state.home) > 0.7
    unattended = P.sample_bilinear(A, state.home) < 0.05
    dist = np.linalg.norm(state.pos - state.home, axis=1)
    assert attended.sum() > 50 and unattended.sum() > 50
    assert np.median(dist[attended]) < 0.5 * np.median(dist[unattended])


def test_full_attention_in_the_noise_phase_leaves_only_drag():
    prm = P.ParticleParams(count=16, drag=0.1)
    state = P.init_particles(16, seed=0)
    state = P.ParticleState(state.home, state.pos, np.full((16, 2), 0.2, np.float32), 3.0)
    coasting = P.step(state, np.ones((4, 4), np.float32), 0.0, prm)
    np.testing.assert_allclose(np.abs(coasting.vel), 0.2 * 0.9, atol=1e-6)


def test_phase_weight_morphs_without_cuts_across_a_run():
    schedule = PhaseSchedule()
    total = 50
    w = [P.phase_weight(schedule.weights_at(s, total)) for s in range(total)]
    assert w[0] == 0.0 and w[-1] == pytest.approx(1.0)
    assert all(b >= a - 1e-9 for a, b in zip(w, w[1:]))  # never falls back towards chaos
    assert max(b - a for a, b in zip(w, w[1:])) <= 0.7 / (schedule.blend * total) + 1e-9


def test_word_attention_normalises_by_the_words_own_peak():
    maps = np.zeros((2, 4, 4), np.float16)
    maps[0, 1, 2] = 3.0
    maps[0, 0, 0] = 1.5
    a = P.word_attention(maps, 0)
    assert a.dtype == np.float32 and a.max() == 1.0 and a[0, 0] == 0.5
    assert not P.word_attention(maps, 1).any()


def test_grid_homes_put_one_particle_in_each_cell():
    homes = P.grid_homes(256, seed=4)
    cells = np.floor(homes * 16).astype(int)
    assert len({tuple(c) for c in cells}) == 256
    np.testing.assert_array_equal(homes, P.grid_homes(256, seed=4))
    assert not np.array_equal(homes, P.grid_homes(256, seed=5))


def test_colours_come_from_the_preview_at_home_and_render_averages_shared_pixels():
    preview = np.zeros((2, 2, 3), np.uint8)
    preview[0, 1] = (255, 0, 0)
    preview[1, 0] = (0, 0, 255)
    home = np.array([[0.75, 0.25], [0.25, 0.75]], np.float32)
    colors = P.particle_colors(preview, home)
    np.testing.assert_array_equal(colors, [[255, 0, 0], [0, 0, 255]])
    pos = np.array([[0.1, 0.1], [0.12, 0.1]], np.float32)  # both land on pixel (0, 0)
    img = P.render(pos, colors, 4, 3, background=(9, 9, 9))
    assert img.shape == (3, 4, 3)
    np.testing.assert_array_equal(img[0, 0], [128, 0, 128])
    assert (img.reshape(-1, 3)[1:] == 9).all()


def test_bad_parameters_are_refused_with_a_sentence():
    from bridge.errors import UserError

    with pytest.raises(UserError, match="drag must be within 0..1, got 1.5"):
        P.ParticleParams(drag=1.5)
    with pytest.raises(ValueError, match="particle count must be at least 1, got 0"):
        P.ParticleParams(count=0)


def test_a_run_morphs_from_chaos_to_the_image_and_the_strip_is_saved_for_the_docs():
    """The reference over a drawn scene through a whole phase schedule: particles start
    scattered, swirl, and end up drawing the image (docs/img/particles-reference.png)."""
    from pathlib import Path

    from PIL import Image

    from tests._scenes import SUN, sun_over_sea

    image = sun_over_sea(128)
    h = w = 32
    yy, xx = (np.mgrid[0:h, 0:w] + 0.5) / h
    attention = np.exp(-((xx - SUN[0]) ** 2 + (yy - SUN[1]) ** 2) / (2 * 0.1**2)).astype(np.float32)
    prm = P.ParticleParams(count=16384)
    state = P.init_particles(prm.count, seed=1)
    colors = P.particle_colors(image, state.home)
    schedule, total, per_step = PhaseSchedule(), 20, 30  # 20 model steps, 30 updates each (0.5 s)
    frames = []
    for s in range(total):
        state = P.advance(state, attention, P.phase_weight(schedule.weights_at(s, total)), prm, updates=per_step)
        if s in (0, 5, 10, 15, 19):
            frames.append(P.render(state.pos, colors, 160, 160))
    dist = np.linalg.norm(state.pos - state.home, axis=1)
    on_sun = P.sample_bilinear(attention, state.home) > 0.8
    assert np.median(dist[on_sun]) < 0.01  # the attended word's particles are home
    assert np.median(dist) < 0.5 * np.median(np.linalg.norm(P.init_particles(prm.count, seed=1).pos - state.home, axis=1))
    final = frames[-1].astype(int)
    reference = np.asarray(Image.fromarray(image).resize((160, 160), Image.NEAREST)).astype(int)
    lit = final.max(axis=2) > 0
    assert np.abs(final[lit] - reference[lit]).mean() < 25  # particles draw the image
    first = frames[0].astype(int)
    assert np.abs(first[first.max(axis=2) > 0] - reference[first.max(axis=2) > 0]).mean() > 40  # not at the start
    out = Path(__file__).resolve().parents[1] / "docs" / "img"
    out.mkdir(parents=True, exist_ok=True)
    gap = np.full((160, 4, 3), 24, np.uint8)
    strip = np.concatenate([x for f in frames for x in (f, gap)][:-1], axis=1)
    Image.fromarray(strip).save(out / "particles-reference.png")


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(
    attraction=st.floats(0, 30), wind=st.floats(0, 5), drag=st.floats(0.01, 1), noise_scale=st.floats(0.5, 10),
    floor=st.floats(0, 1), w=st.floats(0, 1), seed=st.integers(0, 2**16), time=st.floats(0, 1e6),
)
def test_any_setting_within_the_controls_keeps_particles_finite_and_in_the_image(attraction, wind, drag, noise_scale, floor, w, seed, time):
    """Every value the viewer's sliders and TouchDesigner's parameters allow is stable."""
    prm = P.ParticleParams(count=256, attraction=attraction, wind=wind, drag=drag, noise_scale=noise_scale, attention_floor=floor)
    rng = np.random.default_rng(seed)
    state = P.init_particles(256, seed=seed)
    state = P.ParticleState(state.home, state.pos, rng.normal(0, 2, (256, 2)).astype(np.float32), time)
    attention = rng.random((8, 12)).astype(np.float32)
    state = P.advance(state, attention, w, prm, updates=120)
    assert np.isfinite(state.vel).all()
    assert state.pos.min() >= 0.0 and state.pos.max() <= 1.0
    assert np.abs(state.vel).max() < 50  # no blow-up: speeds stay at a few image sizes per second
