"""Self-attention pooled to a coarse grid (``self_grid``) equals an independent eager reference,
leaves the image bit-identical, is recorded, and gives region maps and diffused attention
after the run (export) without re-rendering.

The reference materialises every ``attn1`` call's full softmax(q·kᵀ/√d) per conditional image
and head in float64, averages the heads, sums the images, and pools it with overlap weights
computed here by interval arithmetic in plain loops: a cell's query rows averaged by their
overlap with it, each key position's mass split over the cells it overlaps by overlap.
Diffusion is re-implemented from its definition (docs/CAPTURE.md): m ← coverage, then
(1 + iterations) times m ← m·T, values under cut × peak dropped, renormalised."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from _qk_reference import QKRecorder, reference_coverage
from bridge import selfgrid
from bridge.bus import Bus
from bridge.cli import main
from bridge.engine import GenerationRequest
from bridge.errors import InvalidRequest
from bridge.recording import Recorder, load_recording
from bridge.regions import from_dict

PROMPT = "a red apple on a wooden table"


def overlap(a0, a1, b0, b1):
    return max(0.0, min(a1, b1) - max(a0, b0))


def reference_pooling(gh, gw, h, w):
    cells = [(ay, ax) for ay in range(gh) for ax in range(gw)]
    pos = [(y, x) for y in range(h) for x in range(w)]
    ov = np.array([[overlap(ay / gh, (ay + 1) / gh, y / h, (y + 1) / h) * overlap(ax / gw, (ax + 1) / gw, x / w, (x + 1) / w)
                    for (y, x) in pos] for (ay, ax) in cells])
    return ov / ov.sum(1, keepdims=True), (ov / ov.sum(0, keepdims=True)).T


def reference_grids(rec: QKRecorder, cfg: bool, grid_hw):
    out, start = [], 0
    gh, gw = grid_hw
    for end in rec.boundaries:
        total = np.zeros((gh * gw, gh * gw))
        for call in rec.calls[start:end]:
            q, k, heads, (h, w) = call["q"], call["k"], call["heads"], call["hw"]
            b, d = q.shape[0], q.shape[-1] // heads
            p = torch.zeros(h * w, h * w, dtype=torch.float64)
            for i in (range(b // 2, b) if cfg else range(b)):
                for head in range(heads):
                    qh, kh = q[i, :, head * d:(head + 1) * d], k[i, :, head * d:(head + 1) * d]
                    p += torch.softmax(qh @ kh.T / math.sqrt(d), dim=-1) / heads
            qp, kp = reference_pooling(gh, gw, h, w)
            total += qp @ p.numpy() @ kp
        out.append(total.reshape(gh * gw, gh, gw))
        start = end
    return out


def run_with_grid(engine, grid, guidance, width, height, steps=2, **kw):
    """A run through the engine with the grid on; the recorder marks each step as its frame arrives."""
    frames = []
    with QKRecorder(engine.pipe.unet, "attn1") as rec:
        class Keep:
            def on_step(self, frame):
                frames.append(frame)
                rec.mark_step()

        end = engine.generate(GenerationRequest(PROMPT, seed=5, steps=steps, guidance=guidance, width=width,
                                                height=height, self_grid=grid, **kw), Bus([Keep()]))
    assert end.status == "completed"
    return frames, rec, end


@pytest.mark.parametrize("grid,guidance,width,height", [
    (4, 7.5, 64, 64),  # CFG: conditional rows only; the 8×8 latent's layers pooled to 4×4
    (8, 0.0, 64, 64),  # guidance off; the 8×8 layer is the grid itself, the 4×4 one spreads over it
    (6, 7.5, 96, 64),  # non-square: 6 × 4 cells on an 8 × 12 latent (uneven overlaps)
])
def test_the_pooled_matrix_equals_the_eager_reference(tiny_engine, grid, guidance, width, height):
    frames, rec, _ = run_with_grid(tiny_engine, grid, guidance, width, height)
    grid_hw = selfgrid.grid_shape(grid, (height // 8, width // 8))
    want = reference_grids(rec, guidance > 1, grid_hw)
    assert len(frames) == len(want) == 2
    for frame, ref in zip(frames, want):
        got = frame.kinds["selfgrid"].astype(np.float64)
        assert got.shape == ref.shape == (grid_hw[0] * grid_hw[1], *grid_hw)
        assert np.abs(got - ref).max() < 1e-3 * ref.max()  # float16 as recorded
        rows = ref.reshape(len(ref), -1).sum(1)  # every row's mass: the layer calls × images
        assert np.allclose(rows, rows[0])


def test_diffusion_and_region_maps_follow_their_definition(tiny_engine):
    frames, _, _ = run_with_grid(tiny_engine, 8, 7.5, 64, 64, steps=1)
    matrix = frames[0].kinds["selfgrid"].astype(np.float64)
    spec = {"id": "b", "box": [8, 8, 24, 24]}
    region = from_dict(spec)
    t = matrix.reshape(64, 64)
    t = t / t.sum(1, keepdims=True)
    cover = reference_coverage(spec, 8, 8, (64, 64))
    np.testing.assert_allclose(selfgrid.region_map(matrix, region, (64, 64)).reshape(-1), cover @ t, atol=1e-9)
    m = cover
    for _ in range(1 + 3):
        m = m @ t
        m = np.where(m >= 0.99 * m.max(), m, 0)  # the tiny model's attention is near uniform: a high cut
        m = m / m.sum()
    got = selfgrid.diffuse(matrix, region, (64, 64), iterations=3, cut=0.99).reshape(-1)
    np.testing.assert_allclose(got, m, atol=1e-9)
    assert (got == 0).any() and abs(got.sum() - 1) < 1e-9  # the cut bites, the mass stays 1


def test_the_grid_leaves_the_image_bit_identical_and_costs_nothing_when_off(tiny_engine):
    plain = tiny_engine.generate(GenerationRequest(PROMPT, seed=5, steps=2, guidance=7.5), Bus([]))
    frames, _, end = run_with_grid(tiny_engine, 8, 7.5, 64, 64)
    np.testing.assert_array_equal(end.image, plain.image)
    off = []

    class Keep:
        def on_step(self, frame):
            off.append(frame)

    tiny_engine.generate(GenerationRequest(PROMPT, seed=5, steps=1, guidance=7.5), Bus([Keep()]))
    assert "selfgrid" not in off[0].kinds


@pytest.mark.parametrize("grid", [-1, 65, 2.5, True])
def test_a_bad_grid_is_one_sentence(tiny_engine, grid):
    with pytest.raises(InvalidRequest, match="self_grid must be"):
        tiny_engine.validate(GenerationRequest(PROMPT, steps=1, self_grid=grid))


def record(engine, folder, **request):
    """A run of the prompt (seed 5) recorded into ``folder``."""
    recorder = Recorder(folder)
    engine.generate(GenerationRequest(PROMPT, seed=5, **request), Bus([recorder]))
    recorder.close()
    return folder


def test_regions_chosen_after_the_run_are_exported_from_the_recording(tiny_engine, tmp_path):
    folder = record(tiny_engine, tmp_path / "run", steps=3, guidance=7.5, self_grid=8)
    rec = load_recording(folder)
    assert rec.map_array("selfgrid", 2).shape == (64, 8, 8)
    out = tmp_path / "export"
    assert main(["export", str(folder), "-o", str(out), "--what", "self", "--region", "box:8,8,24,24",
                 "--region", "pixel:50,50", "--diffuse", "3", "--no-progress"]) == 0
    names = sorted(p.name for p in (out / "self").iterdir())
    assert names == ["curves.csv", "r0.png", "r0_diffused.png", "r1.png", "r1_diffused.png"]
    lines = (out / "self" / "curves.csv").read_text().splitlines()
    assert lines[0] == "step,inside_r0,inside_r1" and len(lines) == 4
    assert main(["export", str(folder), "-o", str(tmp_path / "x"), "--what", "self", "--region", "box:1,2,3",
                 "--no-progress"]) == 2


def test_a_timelapse_draws_regions_chosen_after_the_run(tiny_engine, tmp_path):
    import imageio.v3 as iio

    from bridge.timelapse.style import Style, frame_maps

    folder = record(tiny_engine, tmp_path / "run", steps=3, guidance=7.5, self_grid=8)
    rec = load_recording(folder)
    regions = (from_dict({"id": "a", "box": [0, 0, 16, 16]}), from_dict({"id": "b", "pixel": [60, 60]}))
    style = Style((64, 64), ((0, "a"),), after=regions, image_hw=(64, 64))
    frame = rec.frame(1)
    maps = frame_maps(frame, "self", style=style)
    want = [selfgrid.region_map(frame.kinds["selfgrid"], r, (64, 64)) for r in regions]
    assert maps.shape == (2, *frame.kinds["maps"].shape[1:]) and np.abs(maps[0] - maps[1]).max() > 0
    h, w = maps.shape[1:]
    blocks = maps[0].reshape(8, h // 8, 8, w // 8).mean(axis=(1, 3))  # back on the grid: the grid map, upsampled
    assert np.corrcoef(blocks.ravel(), want[0].ravel())[0, 1] > 0.95
    out = tmp_path / "t.mp4"
    assert main(["timelapse", str(folder), "-o", str(out), "--layout", "grid", "--region", "box:0,0,16,16",
                 "--region", "pixel:60,60", "--size", "64", "--fps", "10", "--hold", "0", "--no-progress"]) == 0
    assert len(list(iio.imiter(out))) == 3
    plain = record(tiny_engine, tmp_path / "plain", steps=1)
    assert main(["timelapse", str(plain), "-o", str(tmp_path / "x.mp4"), "--region", "box:0,0,16,16",
                 "--no-progress"]) == 2
