"""Layouts: how one step's picture is arranged before caption and timeline are added.

Every layout is a class built once per run (sizes, words, options) whose ``render(frame)``
returns an RGB uint8 array of a fixed size for every frame of the run.

- ``single``: the preview with one word's heat map overlaid.
- ``grid``:   one overlaid tile per chosen word, labelled, in a near-square grid.
- ``side``:   the plain preview, then one overlaid tile per chosen word, in a row.
- ``particles``: the particle law (bridge/particles.py) driven by one word's attention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ..frames import RunStart, StepFrame
from . import heatmap
from .caption import font, font_size_for

LAYOUTS = ("single", "grid", "side", "particles")


@dataclass(frozen=True)
class Style:
    tile: tuple[int, int]  # (height, width) of one image tile
    words: tuple[tuple[int, str], ...]  # (index in the run's words, word) to show
    colormap: str = "inferno"
    opacity: float = 0.6
    map_kind: str = "step"  # "step": this step's attention; "cumulative": DAAM so far


def tile_size(start: RunStart, longest: int) -> tuple[int, int]:
    """Tile (height, width) with the image's aspect ratio and ``longest`` pixels on its long side."""
    h, w = start.height, start.width
    scale = longest / max(h, w)
    return (max(2, round(h * scale)), max(2, round(w * scale)))


def _maps(frame: StepFrame, kind: str) -> np.ndarray:
    return frame.cumulative if kind == "cumulative" else frame.maps


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    img = Image.fromarray(tile)
    d = ImageDraw.Draw(img)
    f = font(font_size_for(tile.shape[1]))
    box = d.textbbox((6, 4), text, font=f)
    d.rectangle([box[0] - 3, box[1] - 2, box[2] + 3, box[3] + 2], fill=(0, 0, 0))
    d.text((6, 4), text, font=f, fill=(255, 255, 255))
    return np.asarray(img)


class _Overlays:
    """Shared by the image layouts: the preview and per-word overlays at tile size."""

    def __init__(self, start: RunStart, style: Style):
        self.start, self.style = start, style

    def preview(self, frame: StepFrame) -> np.ndarray:
        return heatmap.resize_rgb(frame.preview, self.style.tile)

    def overlay(self, frame: StepFrame, preview: np.ndarray, word_index: int) -> np.ndarray:
        h = heatmap.heat(_maps(frame, self.style.map_kind)[word_index], self.style.tile)
        return heatmap.overlay(preview, h, self.style.colormap, self.style.opacity)


class Single(_Overlays):
    def render(self, frame: StepFrame) -> np.ndarray:
        i, word = self.style.words[0]
        return _label(self.overlay(frame, self.preview(frame), i), word)


class Grid(_Overlays):
    def __init__(self, start: RunStart, style: Style):
        super().__init__(start, style)
        n = len(style.words)
        self.cols = math.ceil(math.sqrt(n))
        self.rows = math.ceil(n / self.cols)

    def render(self, frame: StepFrame) -> np.ndarray:
        th, tw = self.style.tile
        out = np.zeros((self.rows * th, self.cols * tw, 3), np.uint8)
        preview = self.preview(frame)
        for k, (i, word) in enumerate(self.style.words):
            r, c = divmod(k, self.cols)
            out[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = _label(self.overlay(frame, preview, i), word)
        return out


class Side(_Overlays):
    def render(self, frame: StepFrame) -> np.ndarray:
        preview = self.preview(frame)
        tiles = [_label(preview, "image")]
        tiles += [_label(self.overlay(frame, preview, i), word) for i, word in self.style.words]
        return np.concatenate(tiles, axis=1)


def make_layout(name: str, start: RunStart, style: Style, **options):
    if name == "single":
        return Single(start, style)
    if name == "grid":
        return Grid(start, style)
    if name == "side":
        return Side(start, style)
    if name == "particles":
        from .particles_layout import Particles  # needs bridge/particles.py only here

        return Particles(start, style, **options)
    raise ValueError(f"unknown layout {name!r}; choose one of {', '.join(LAYOUTS)}")
