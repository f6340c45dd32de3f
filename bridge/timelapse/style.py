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
    words: tuple[tuple[int, str], ...]  # (index in the run's words — or region ids —, its label) to show
    colormap: str = "inferno"
    opacity: float = 0.6
    map_kind: str = "step"  # a map kind's `timelapse --map` name (bridge/mapkinds.py): step, cumulative, self
    region_ids: tuple[str, ...] = ()  # for a kind labelled by regions or concepts: every id (name) of the run, in order
    after: tuple = ()  # regions chosen after the run (bridge.regions.Region): drawn from each step's self grid
    image_hw: tuple[int, int] = (0, 0)  # the run's image size, which regions are given in


def tile_size(start: RunStart, longest: int) -> tuple[int, int]:
    """Tile (height, width) with the image's aspect ratio and ``longest`` pixels on its long side."""
    h, w = start.height, start.width
    scale = longest / max(h, w)
    return (max(2, round(h * scale)), max(2, round(w * scale)))


def shown_region(frame: StepFrame, style: Style, index: int):
    """The query region (bridge.regions.Region) whose self-attention map is shown at ``index``,
    or None: a word or concept map, or a step that did not have that region."""
    if style.after:
        return style.after[index]
    if mapkinds.by_cli_name(style.map_kind).labels != "regions" or index >= len(style.region_ids):
        return None
    from ..regions import RegionError, from_dict

    have = step_labels("regions", frame.regions, ())
    if style.region_ids[index] not in have:
        return None
    k = have.index(style.region_ids[index])
    try:
        return from_dict(frame.regions[k], k)
    except RegionError:  # a recording edited by hand: show the map without its outline
        return None


def step_labels(labels: str, regions, concepts) -> list[str]:
    """The ids a step's maps of a kind labelled by ``labels`` carry, in order (a StepFrame's or a
    recorded step line's ``regions`` and ``concepts``)."""
    if labels == "regions":
        return [str(r.get("id", "")) for r in regions or ()]
    return [str(c) for c in concepts or ()]


def frame_maps(frame: StepFrame, map_kind: str, region_ids: tuple[str, ...] = (), style: Style | None = None) -> np.ndarray:
    """The frame's array of the map kind named ``map_kind`` on the command line.  A kind labelled
    by regions or concepts is aligned to ``region_ids`` (they may change between steps): an id this
    step did not have gets an empty map.  With ``style.after`` the regions' maps come from the
    step's self grid instead (bridge/selfgrid.py), at the map size."""
    if style is not None and style.after:
        from .. import selfgrid
        from .heatmap import upsample

        grid = frame.kinds.get("selfgrid")
        size = frame.kinds["maps"].shape[1:]
        if grid is None:
            return np.zeros((len(style.after), *size), np.float32)
        return np.stack([upsample(selfgrid.region_map(grid, r, style.image_hw), size) for r in style.after])
    kind = mapkinds.by_cli_name(map_kind)
    maps = frame.kinds.get(kind.name)
    if kind.labels not in ("regions", "concepts"):
        return maps
    have = step_labels(kind.labels, frame.regions, frame.concepts) if maps is not None else []
    out = np.zeros((len(region_ids), *frame.kinds["maps"].shape[1:]), np.float32)
    for k, rid in enumerate(region_ids):
        if rid in have:
            out[k] = maps[have.index(rid)]
    return out


def label(tile: np.ndarray, text: str) -> np.ndarray:
    img = Image.fromarray(tile)
    d = ImageDraw.Draw(img)
    f = font(font_size_for(tile.shape[1]))
    box = d.textbbox((6, 4), text, font=f)
    d.rectangle([box[0] - 3, box[1] - 2, box[2] + 3, box[3] + 2], fill=(0, 0, 0))
    d.text((6, 4), text, font=f, fill=(255, 255, 255))
    return np.asarray(img)
