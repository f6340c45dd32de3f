#!/usr/bin/env python3
"""Draw docs/img/shapes-daam.png: a render of the built-in model and its words' DAAM maps.

Renders through ``run_bridge.py render`` (seed 0, 20 steps, CPU), exactly as a user would, then
puts the image and the cumulative maps of the chosen words side by side, each map scaled to
its own maximum with the "hot" colormap.

Usage: python docs/make_model_figure.py [--prompt P] [--words star circle yellow green]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.timelapse import heatmap  # noqa: E402

TILE = 182
GAP = 10


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompt", default="a yellow star and a green circle")
    p.add_argument("--words", nargs="+", default=["star", "circle", "yellow", "green"])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "shapes-daam.png")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        subprocess.run([sys.executable, str(ROOT / "run_bridge.py"), "render", "--prompt", args.prompt,
                        "--seed", "0", "--device", "cpu", "--out", str(run), "--no-progress"], check=True)
        words = json.loads((run / "manifest.json").read_text())["words"]
        daam = np.load(run / "daam.npy").astype(np.float32)
        image = np.asarray(Image.open(run / "final.png").convert("RGB"))
    tiles = [heatmap.resize_rgb(image, (TILE, TILE))]
    for word in args.words:
        if word not in words:
            raise SystemExit(f"'{word}' is not a word of the prompt; its words are {words}")
        h = heatmap.heat(daam[words.index(word)], (TILE, TILE))
        tiles.append(heatmap.heat_image(h, "hot"))
    sheet = np.full((TILE, len(tiles) * TILE + (len(tiles) - 1) * GAP, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        sheet[:, i * (TILE + GAP): i * (TILE + GAP) + TILE] = t
    Image.fromarray(sheet).save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
