#!/usr/bin/env python3
"""What a self-attention region map means on the built-in shapes model, and when it forms.

For held-out prompts (bench/attribution.py's scenes, a seed training never used):

1. render the scene; colour-segment its objects in the final image (bench/attribution.py);
2. render it again, same seed (the image is bit-identical), with one query box per drawn
   object: 6 × 6 image pixels around the object's centre of mass, inside the object;
3. score each box's map: **share** = the part of its map's mass (summed over the run's steps,
   bicubic to the image size) that lies on its own object — against the object's area
   fraction, which a map spread evenly would get;
   — and against the **ceiling** of the model's grid: the object's own mask, average-pooled to
   the finest grid its attention layers have (image pixels per cell: the family's smallest
   layer factor; 8 × 8 tokens on builtin:shapes-dit) and upsampled as the capture upsamples,
   i.e. a map that attends to exactly the object's cells (where the layers mix grids, as the
   UNet's do, the finest grid's ceiling is an upper bound).  A small object on a coarse grid
   spills past its edges however sharp the attention is, so the ceiling says how much of a
   shortfall is the grid's and how much the model's;
4. **diffused**: the same box's diffused attention (bridge/selfgrid.py: the run's self grid,
   16 cells a side, summed over steps, expanded 3 times with a 0.1 cut) and its share;
5. **when**: the first step from which a box's per-step share stays ≥ 90 % of its final-step
   share, next to the step from which the object's shape word's DAAM mask stays ≥ 0.9 IoU with
   its final mask (bridge/masks.py) — does an object's self-attention gather before its word
   map settles?

Usage:  python bench/self_attention.py [--prompts 100] [--steps 20] [--model builtin]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import attribution as A  # noqa: E402
from bridge import masks, selfgrid  # noqa: E402

BOX = 6  # image pixels per side of each object's query box
GRID = 16  # self grid cells a side for the diffused maps
SETTLED = 0.9


class Frames:
    def __init__(self):
        self.frames, self.start = [], None

    def on_run_start(self, start):
        self.start, self.frames = start, []

    def on_step(self, frame):
        self.frames.append(frame)


def centre_box(mask: np.ndarray):
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean(), xs.mean()
    h, w = mask.shape
    x0, y0 = min(max(cx - BOX / 2, 0), w - BOX), min(max(cy - BOX / 2, 0), h - BOX)
    return x0, y0, x0 + BOX, y0 + BOX


def share(map_: np.ndarray, mask: np.ndarray) -> float:
    m = np.clip(A.resize_map(map_, mask.shape), 0, None)
    total = m.sum()
    return float((m * mask).sum() / total) if total > 0 else 0.0


def ceiling(mask: np.ndarray, factor: int, map_hw: tuple[int, int]) -> float:
    """The share of a map that is the object's mask pooled to a ``factor``-pixel grid, upsampled
    bicubically to the map size and clamped as bridge/attention/selfagg.py does."""
    h, w = mask.shape
    return share(A.perfect_maps(mask, (h // factor, w // factor), map_hw), mask)


def first_settled(values: list[float], final: float) -> int:
    """First step from which ``values`` stay ≥ SETTLED × ``final``."""
    ok = [v >= SETTLED * final for v in values]
    for i in range(len(ok)):
        if all(ok[i:]):
            return i
    return len(ok) - 1


def measure(engine, prompts: int, steps: int = 20, layers=None, progress: bool = True) -> dict:
    """Render ``prompts`` held-out scenes twice each (plain, then with a box in every drawn
    object) and score the boxes' maps; returns per-object lists and the model's grid factor."""
    from dataclasses import replace

    from tqdm import tqdm

    from bridge.bus import Bus
    from bridge.engine import GenerationRequest
    from bridge.regions import make

    sink = Frames()
    factor = min(engine.family.layer_factors)
    out = {k: [] for k in ("shares", "last_shares", "areas", "self_steps", "word_steps", "diffused", "ceilings")}
    scenes = A.sd.sample_scenes(A.BENCH_SEED, prompts)
    for i, scene in enumerate(tqdm(scenes, desc="self-attention", disable=not progress)):
        base = GenerationRequest(scene.caption, seed=i, steps=steps, layers=layers)
        image = A.render(engine, base, Bus([sink])).image
        objects = [(j, m) for j, m in enumerate(A.object_masks(image, scene)) if m is not None]
        if not objects:
            continue
        words = sink.start.words
        cumulative = np.stack([f.cumulative for f in sink.frames]).astype(np.float32)
        regions = tuple(make("box", (c[:2], c[2:]), f"o{j}") for j, m in objects for c in [centre_box(m)])
        again = A.render(engine, replace(base, regions=regions, self_grid=GRID), Bus([sink]))
        assert np.array_equal(again.image, image), "a region changed the image"
        self_maps = np.stack([f.kinds["self"] for f in sink.frames]).astype(np.float32)  # (S, R, h, w)
        matrix = sum(f.kinds["selfgrid"].astype(np.float64) for f in sink.frames)
        for r, (j, mask) in enumerate(objects):
            per_step = [share(self_maps[s, r], mask) for s in range(len(self_maps))]
            out["shares"].append(share(self_maps[:, r].sum(axis=0), mask))
            out["diffused"].append(share(selfgrid.diffuse(matrix, regions[r], image.shape[:2]), mask))
            out["last_shares"].append(per_step[-1])
            out["areas"].append(float(mask.mean()))
            out["ceilings"].append(ceiling(mask, factor, self_maps.shape[-2:]))
            out["self_steps"].append(first_settled(per_step, per_step[-1]))
            noun = A.word_index(words, scene, j, "shape")
            ious = masks.iou_with_final(cumulative[:, noun:noun + 1], 0.4)
            out["word_steps"].append(masks.stabilisation_steps(ious, np.arange(len(ious)), 0.9)[0] or 0)
    out["factor"] = factor
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=100)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--model", default="builtin")
    p.add_argument("--device", default="auto")
    p.add_argument("--layers", default=None, help="layer filter, as render --layers (default: every layer)")
    args = p.parse_args(argv)
    layers = tuple(x.strip() for x in args.layers.split(",")) if args.layers else None

    from bridge.engine import Engine

    engine = Engine.load(args.model, device=args.device, progress=False)
    r = measure(engine, args.prompts, args.steps, layers)
    shares, self_steps, word_steps = r["shares"], r["self_steps"], r["word_steps"]
    n, factor = len(shares), r["factor"]
    print(f"{args.model}, {args.prompts} prompts, {args.steps} steps, layers {args.layers or 'all'}: {n} drawn objects, "
          f"a {BOX}×{BOX} px box in each")
    print(f"share of a box's self-attention on its own object: mean {statistics.mean(shares):.3f}, "
          f"median {statistics.median(shares):.3f}, 10th percentile {np.percentile(shares, 10):.3f} (target ≥ 0.7); "
          f"the last step's map alone: mean {statistics.mean(r['last_shares']):.3f}; "
          f"the object's area fraction (an even spread): mean {statistics.mean(r['areas']):.3f}; "
          f"the ceiling of a map on exactly the object's cells of the {factor}-pixel grid: mean {statistics.mean(r['ceilings']):.3f}")
    print(f"share of the box's diffused attention ({GRID}×{GRID} self grid) on its own object: mean "
          f"{statistics.mean(r['diffused']):.3f}, median {statistics.median(r['diffused']):.3f}")
    print(f"step from which the box's per-step share stays ≥ {SETTLED:.0%} of its last: median {statistics.median(self_steps):.0f}; "
          f"step from which the shape word's mask stays ≥ 0.9 IoU with its last: median {statistics.median(word_steps):.0f} "
          f"(self-attention first in {sum(a < b for a, b in zip(self_steps, word_steps))} of {n} objects, "
          f"same step in {sum(a == b for a, b in zip(self_steps, word_steps))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
