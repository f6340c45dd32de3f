#!/usr/bin/env python3
"""Draw docs/img/shapes-daam.png: a render of the built-in model and its words' DAAM maps.

Renders through ``run_bridge.py render`` (seed 0, 20 steps, CPU), exactly as a user would, then
puts the image and the cumulative maps of the chosen words side by side, each map scaled to
its own maximum with the "hot" colormap.  With ``--concepts`` a second row shows each concept's
map averaged over the steps and their argmax segmentation (as ``export --what concepts``).

Usage: python docs/make_model_figure.py [--prompt P] [--words star circle yellow green]
       python docs/make_model_figure.py --model builtin:shapes-dit --concepts star circle background --out docs/img/shapes-dit-maps.png
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.export import concept_averages, segment_picture, segments  # noqa: E402
from bridge.recording import load_recording  # noqa: E402
from bridge.timelapse import heatmap  # noqa: E402
from bridge.timelapse.caption import font  # noqa: E402

TILE = 182
GAP = 10
LABEL = 24  # a strip under each row naming its panels


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompt", default="a yellow star and a green circle")
    p.add_argument("--words", nargs="+", default=["star", "circle", "yellow", "green"])
    p.add_argument("--model", default="builtin")
    p.add_argument("--concepts", nargs="*", default=[], help="concepts for a second row (default: none)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "shapes-daam.png")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        extra = ["--concepts", ",".join(args.concepts)] if args.concepts else []
        subprocess.run([sys.executable, str(ROOT / "run_bridge.py"), "render", "--model", args.model, "--prompt", args.prompt,
                        "--seed", "0", "--device", "cpu", "--out", str(run), "--no-progress", *extra], check=True)
        words = json.loads((run / "manifest.json").read_text())["words"]
        daam = np.load(run / "daam.npy").astype(np.float32)
        image = np.asarray(Image.open(run / "final.png").convert("RGB"))
        names, means, _ = concept_averages(load_recording(run)) if args.concepts else ((), {}, [])
    rows = [[heatmap.resize_rgb(image, (TILE, TILE))]]
    labels = [["image"] + [f'word "{w}"' for w in args.words]]
    for word in args.words:
        if word not in words:
            raise SystemExit(f"'{word}' is not a word of the prompt; its words are {words}")
        rows[0].append(heatmap.heat_image(heatmap.heat(daam[words.index(word)], (TILE, TILE)), "hot"))
    if names:
        stack = np.stack([heatmap.upsample(means[n], (TILE, TILE)) for n in names])
        rows.append([segment_picture(heatmap.resize_rgb(image, (TILE, TILE)), segments(stack), len(names))]
                    + [heatmap.heat_image(heatmap.heat(means[n], (TILE, TILE)), "hot") for n in names])
        labels.append(["concepts, argmax"] + [f'concept "{n}"' for n in names])
    width = max(len(r) for r in rows)
    pitch = TILE + LABEL + GAP
    sheet = np.full((len(rows) * pitch - GAP, width * TILE + (width - 1) * GAP, 3), 255, np.uint8)
    for j, row in enumerate(rows):
        for i, t in enumerate(row):
            sheet[j * pitch: j * pitch + TILE, i * (TILE + GAP): i * (TILE + GAP) + TILE] = t
    picture = Image.fromarray(sheet)
    draw = ImageDraw.Draw(picture)
    for j, row in enumerate(labels):
        for i, text in enumerate(row):
            draw.text((i * (TILE + GAP) + TILE / 2, j * pitch + TILE + LABEL / 2), text, fill=(40, 40, 40), font=font(15), anchor="mm")
    picture.save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
