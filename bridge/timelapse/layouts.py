"""The layout registry: one row per layout, read by the renderer and by `timelapse --layout`.

A layout arranges one step's picture before caption and timeline are added: a class built
once per run (start, style, options) whose ``render(frame)`` returns an RGB uint8 array of a
fixed size for every frame; an animated one also has ``sequence(frame)`` (several frames per
step) and ``frames_per_step``.  A new layout is a module with its class plus one row here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..frames import RunStart
from .overlays import Grid, Side, Single
from .particles_layout import Particles
from .style import Style, label, tile_size

__all__ = ["LAYOUTS", "Layout", "Style", "label", "make_layout", "tile_size"]


@dataclass(frozen=True)
class Layout:
    name: str
    make: Callable  # (start, style, **options) → the layout's renderer
    words: str  # words shown when none are asked for: "focus", "focus and strongest" or "all" (≤ 16)
    map_kind: str  # map kind under `--map auto` (a `timelapse --map` name, bridge/mapkinds.py)
    help: str  # one line for `timelapse --help`
    options: tuple[str, ...] = ()  # TimelapseOptions fields handed to ``make``
    hold: float = 1.0  # seconds the end stays on screen unless --hold says otherwise


LAYOUTS: dict[str, Layout] = {
    row.name: row
    for row in (
        Layout("single", Single, "focus", "step",
               "the preview with one word's heat map (default: the run's focus word, as in the viewer)"),
        Layout("grid", Grid, "all", "step", "one tile per word (default: up to 16 words in prompt order)"),
        Layout("side", Side, "focus and strongest", "step",
               "the plain preview next to one overlay per word (default: the focus word and the strongest other)"),
        Layout("particles", Particles, "focus", "cumulative",
               "the particle force law of docs/PARTICLES.md driven by one word's attention",
               ("particles", "frames_per_step", "fps"), hold=4.0),  # the morph goes on settling after the last step
    )
}


def make_layout(name: str, start: RunStart, style: Style, **options):
    if name not in LAYOUTS:
        raise ValueError(f"unknown layout {name!r}; choose one of {', '.join(LAYOUTS)}")
    return LAYOUTS[name].make(start, style, **options)
