"""What every layout shares: the style of a run's pictures, tile sizes, labels, the maps to draw."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .. import mapkinds
from ..frames import RunStart, StepFrame
from .caption import font, font_size_for


@dataclass(frozen=True)
class Style:
    tile: tuple[int, int]  # (height, width) of one image tile
    words: tuple[tuple[int, str], ...]  # (index in the run's words, word) to show
    colormap: str = "inferno"
    opacity: float = 0.6
    map_kind: str = "step"  # a map kind's `timelapse --map` name (bridge/mapkinds.py): step, cumulative


def tile_size(start: RunStart, longest: int) -> tuple[int, int]:
    """Tile (height, width) with the image's aspect ratio and ``longest`` pixels on its long side."""
    h, w = start.height, start.width
    scale = longest / max(h, w)
    return (max(2, round(h * scale)), max(2, round(w * scale)))


def frame_maps(frame: StepFrame, map_kind: str) -> np.ndarray:
    """The frame's array of the map kind named ``map_kind`` on the command line."""
    return frame.kinds[mapkinds.by_cli_name(map_kind).name]


def label(tile: np.ndarray, text: str) -> np.ndarray:
    img = Image.fromarray(tile)
    d = ImageDraw.Draw(img)
    f = font(font_size_for(tile.shape[1]))
    box = d.textbbox((6, 4), text, font=f)
    d.rectangle([box[0] - 3, box[1] - 2, box[2] + 3, box[3] + 2], fill=(0, 0, 0))
    d.text((6, 4), text, font=f, fill=(255, 255, 255))
    return np.asarray(img)
