"""Drawn test scenes with known content (not a test module), shared by the viewer and particle tests."""

from __future__ import annotations

import numpy as np

SUN = (0.65, 0.3, 0.14)  # centre x, centre y, radius, in image fractions (y down)


def sun_over_sea(size: int = 128) -> np.ndarray:
    """A drawn scene with known content: sky, a yellow sun, a blue sea below the horizon."""
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size
    image = np.zeros((size, size, 3), np.float64)
    image[...] = np.stack([0.55 + 0.35 * y, 0.55 + 0.1 * y, 0.75 - 0.3 * y], axis=-1)  # dusk sky
    sea = y > 0.6
    image[sea] = np.stack([0.05 + 0 * y, 0.2 + 0.05 * np.sin(40 * y), 0.55 + 0.1 * np.sin(40 * y)], axis=-1)[sea]
    sun = (x - SUN[0]) ** 2 + (y - SUN[1]) ** 2 < SUN[2] ** 2
    image[sun] = (1.0, 0.85, 0.1)
    return (image * 255).round().astype(np.uint8)
