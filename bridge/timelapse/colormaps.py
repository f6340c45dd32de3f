"""Colormaps as 256-entry lookup tables, and a palette of distinct colours for words.

The perceptual maps (inferno, magma, viridis) are piecewise-linear through samples of the
matplotlib definitions every 1/8; that keeps them within a few levels of the originals without
shipping or importing matplotlib.
"""

from __future__ import annotations

import numpy as np

from ..palette import HEAT, WORDS

_STOPS: dict[str, list[tuple[int, int, int]]] = {
    "inferno": list(HEAT),  # the product's heat ramp (bridge/palette.py): viewer and TouchDesigner too
    "magma": [(0, 0, 4), (28, 16, 68), (79, 18, 123), (129, 37, 129), (181, 54, 122),
              (229, 80, 100), (251, 135, 97), (254, 194, 135), (252, 253, 191)],
    "viridis": [(68, 1, 84), (71, 45, 123), (59, 82, 139), (44, 114, 142), (33, 145, 140),
                (40, 174, 128), (94, 201, 98), (173, 220, 48), (253, 231, 37)],
    "jet": [(0, 0, 128), (0, 0, 255), (0, 128, 255), (0, 255, 255), (128, 255, 128),
            (255, 255, 0), (255, 128, 0), (255, 0, 0), (128, 0, 0)],
    "hot": [(11, 0, 0), (96, 0, 0), (181, 0, 0), (255, 10, 0), (255, 96, 0),
            (255, 181, 0), (255, 255, 16), (255, 255, 136), (255, 255, 255)],
    "gray": [(0, 0, 0), (255, 255, 255)],
}

COLORMAPS = tuple(_STOPS)

WORD_COLORS = WORDS  # the product's word colours (bridge/palette.py)


def lut(name: str) -> np.ndarray:
    """A (256, 3) uint8 table for ``name``; ValueError names the choices when unknown."""
    if name not in _STOPS:
        raise ValueError(f"unknown colormap {name!r}; choose one of {', '.join(COLORMAPS)}")
    return _LUTS[name]


def apply(values: np.ndarray, name: str = "inferno") -> np.ndarray:
    """Map values in 0..1 (any shape) to uint8 RGB (shape + (3,)); values outside are clipped."""
    idx = np.clip(np.asarray(values, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return lut(name)[idx]


def word_color(i: int) -> tuple[int, int, int]:
    return WORD_COLORS[i % len(WORD_COLORS)]


def _build(stops: list[tuple[int, int, int]]) -> np.ndarray:
    s = np.asarray(stops, dtype=np.float64)
    x = np.linspace(0.0, 1.0, len(s))
    t = np.linspace(0.0, 1.0, 256)
    return np.stack([np.interp(t, x, s[:, c]) for c in range(3)], axis=1).round().astype(np.uint8)


_LUTS = {name: _build(stops) for name, stops in _STOPS.items()}
