#!/usr/bin/env python3
"""Draw docs/img/preview-forming.png: what each step's preview shows, old default against new.

Rows, for one run of the built-in model (20 steps, seed 0): the noisy latents through the linear
preview (the old default), the denoised estimate through the linear preview, and the denoised
estimate fully decoded every step (the built-in model's default); columns are steps, then the
final image.

Usage: python docs/make_preview_figure.py [--prompt P] [--seed N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STEPS = (0, 2, 4, 6, 9, 13, 19)
ROWS = (("noisy latents, linear (old default)", dict(preview="latents", vae_every=0)),
        ("denoised, linear", dict(preview="denoised", vae_every=0)),
        ("denoised, decoded each step (default)", dict(preview="denoised", vae_every=1)))
SCALE, LABEL_W, PAD = 2, 250, 4


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompt", default="a yellow star and a green circle")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "preview-forming.png")
    args = p.parse_args(argv)

    from bridge.bus import Bus
    from bridge.engine import Engine, GenerationRequest

    engine = Engine.load("builtin", device="cpu", progress=False)
    rows = []
    for label, kw in ROWS:
        frames, ends = [], []
        sink = type("Keep", (), {"on_run_start": lambda s, e: None, "on_step": lambda s, f: frames.append(f.preview),
                                 "on_run_end": lambda s, e: ends.append(e)})()
        engine.generate(GenerationRequest(args.prompt, seed=args.seed, steps=20, **kw), Bus([sink]))
        rows.append((label, [frames[i] for i in STEPS] + [ends[-1].image]))
    side = rows[0][1][0].shape[0] * SCALE
    width = LABEL_W + len(rows[0][1]) * (side + PAD)
    sheet = Image.new("RGB", (width, 24 + len(rows) * (side + PAD)), (16, 16, 16))
    draw = ImageDraw.Draw(sheet)
    for c, step in enumerate([*(f"step {s + 1}" for s in STEPS), "final"]):
        draw.text((LABEL_W + c * (side + PAD) + 4, 6), step, fill=(220, 220, 220))
    for r, (label, images) in enumerate(rows):
        y = 24 + r * (side + PAD)
        draw.text((6, y + side // 2 - 6), label, fill=(220, 220, 220))
        for c, image in enumerate(images):
            tile = Image.fromarray(np.asarray(image)).resize((side, side), Image.NEAREST)
            sheet.paste(tile, (LABEL_W + c * (side + PAD), y))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
