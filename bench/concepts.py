#!/usr/bin/env python3
"""Can the built-in model draw every colour–shape pair on its own?

The attribution benchmark's 200 random prompts contain each of the 35 colour–shape pairs only a
few times, mixed with other objects, and call an object drawn when 1 % of the image has its
colour.  A model can pass that and still have lost a concept: every render of "a green circle"
a multicoloured blob.  This benchmark renders "a <colour> <shape>" for every pair over a few
seeds and scores each render's **colour purity**: the share of the foreground (pixels whose
nearest palette colour is not the black background) that has the named colour.  Anti-aliased
rims blend into neighbouring palette colours, so a clean shape scores about 0.5-0.8; a render
counts as clean at 0.4 or more.  Pairs clean in under half their seeds are listed as lost.

Usage:
  python bench/concepts.py [--seeds 4] [--model builtin]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import attribution  # noqa: E402

from bridge.builtin import shapes_data as sd  # noqa: E402

CLEAN_PURITY = 0.4
LOST_BELOW = 0.5  # share of clean seeds under which a pair counts as lost


def colour_purity(image: np.ndarray, colour: str, background: str = "black") -> float:
    """Share of the labelled non-background pixels whose nearest palette colour is ``colour``."""
    labels = attribution.colour_labels(image)
    fg = (labels != attribution.PALETTE_NAMES.index(background)) & (labels >= 0)
    named = labels == attribution.PALETTE_NAMES.index(colour)
    return float(named.sum() / fg.sum()) if fg.any() else 0.0


def pair_prompt(colour: str, shape: str) -> str:
    return sd.caption([sd.ShapeObject(shape, colour, 0.0, 0.0, 1.0)])


def run(seeds: int = 4, model: str = "builtin", device: str = "auto", engine=None, pairs=None,
        progress: bool = True, guidance: float | None = None) -> dict[tuple[str, str], list[float]]:
    """Colour purity of every render, by (colour, shape)."""
    from tqdm import tqdm

    from bridge.bus import Bus
    from bridge.engine import Engine, GenerationRequest

    engine = engine or Engine.load(model, device=device, progress=False)
    bus = Bus([])
    pairs = pairs or [(c, s) for c in sd.COLOURS for s in sd.SHAPES]
    out: dict[tuple[str, str], list[float]] = {}
    for colour, shape in tqdm(pairs, desc="pairs", disable=not progress):
        out[(colour, shape)] = []
        for seed in range(seeds):
            end = attribution.render(engine, GenerationRequest(pair_prompt(colour, shape), seed=seed, steps=20,
                                                                guidance=guidance), bus)
            out[(colour, shape)].append(colour_purity(end.image, colour))
    return out


def clean_share(purities: list[float]) -> float:
    return float(np.mean([p >= CLEAN_PURITY for p in purities]))


def lost_pairs(scores: dict[tuple[str, str], list[float]]) -> list[tuple[str, str]]:
    return [pair for pair, p in scores.items() if clean_share(p) < LOST_BELOW]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Example: python bench/concepts.py --seeds 4")
    p.add_argument("--seeds", type=int, default=4, help="renders per pair, seeds 0..N-1 (default: %(default)s)")
    p.add_argument("--model", default="builtin", help="model to test; it must know the shapes vocabulary")
    p.add_argument("--device", default="auto")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance (default: the model's)")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error("--seeds must be at least 1")
    scores = run(args.seeds, args.model, args.device, guidance=args.guidance)
    shapes = list(sd.SHAPES)
    print(f"clean renders per pair (colour purity ≥ {CLEAN_PURITY}), {args.seeds} seeds each:")
    print("          " + "".join(f"{s:>10s}" for s in shapes))
    for colour in sd.COLOURS:
        print(f"{colour:10s}" + "".join(f"{clean_share(scores[(colour, s)]):>10.2f}" for s in shapes))
    lost = lost_pairs(scores)
    print(f"lost pairs (clean in under {LOST_BELOW:.0%} of seeds): "
          + (", ".join(f"{c} {s}" for c, s in lost) if lost else "none"))
    print(f"mean colour purity {np.mean([v for p in scores.values() for v in p]):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
