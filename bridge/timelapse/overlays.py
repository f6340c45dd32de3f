"""The image layouts: heat maps overlaid on the step's preview (single, grid, side)."""

from __future__ import annotations

import math

import numpy as np

from ..frames import RunStart, StepFrame
from . import heatmap
from .style import Style, frame_maps, label, shown_region


class _Overlays:
    """Shared by the image layouts: the preview and per-word overlays at tile size."""

    def __init__(self, start: RunStart, style: Style):
        self.start, self.style = start, style

    def preview(self, frame: StepFrame) -> np.ndarray:
        return heatmap.resize_rgb(frame.preview, self.style.tile)

    def overlay(self, frame: StepFrame, preview: np.ndarray, word_index: int) -> np.ndarray:
        h = heatmap.heat(frame_maps(frame, self.style.map_kind, self.style.region_ids, self.style)[word_index], self.style.tile)
        out = heatmap.overlay(preview, h, self.style.colormap, self.style.opacity)
        region = shown_region(frame, self.style, word_index)  # a self-attention map shows the region that asked
        return out if region is None else heatmap.outline_region(out, region, self.style.tile[1] / self.style.image_hw[1])


class Single(_Overlays):
    def render(self, frame: StepFrame) -> np.ndarray:
        i, word = self.style.words[0]
        return label(self.overlay(frame, self.preview(frame), i), word)


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
            out[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = label(self.overlay(frame, preview, i), word)
        return out


class Side(_Overlays):
    def render(self, frame: StepFrame) -> np.ndarray:
        preview = self.preview(frame)
        tiles = [label(preview, "image")]
        tiles += [label(self.overlay(frame, preview, i), word) for i, word in self.style.words]
        return np.concatenate(tiles, axis=1)
