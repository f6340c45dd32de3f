"""Which of the built-in model's shapes does a segmented object look like?

Colour segmentation says that a red object was drawn, not that it is a star.  This fits each
of the five training outlines (upright, as the data draws them) to an object's mask: centred on
the mask's centroid (every outline's centroid is its centre), scaled so the areas match, then
nudged by ±1 px and ±10 % of the radius.  The shape whose best fit has the highest IoU with the
mask is the one the object looks like.  A star drawn without arms fits the circle best, a cross
drawn as a blob the square or the circle.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.builtin import shapes_data as sd  # noqa: E402

SHIFTS = (-1.0, 0.0, 1.0)
SCALES = (0.9, 1.0, 1.1)


def _area_factor(shape: str) -> float:
    """Area of the outline at outer radius 1 (½∮r²dθ)."""
    import torch

    theta = torch.linspace(0, 2 * math.pi, 7201, dtype=torch.float64)[:-1]
    r = sd.outline_radius(shape, theta)
    return float(0.5 * (r * r).mean() * 2 * math.pi)


AREA = {s: _area_factor(s) for s in sd.SHAPES}


def fit(mask: np.ndarray) -> dict[str, float]:
    """Best IoU of each shape's outline with a boolean (H, W) mask."""
    import torch

    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    area = float(len(ys))
    if area == 0:
        return {s: 0.0 for s in sd.SHAPES}
    cy, cx = ys.mean() + 0.5, xs.mean() + 0.5  # pixel centres sit at +0.5, as in rasterise
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32) + 0.5, torch.arange(w, dtype=torch.float32) + 0.5,
                            indexing="ij")
    offsets = torch.tensor([(dy, dx) for dy in SHIFTS for dx in SHIFTS], dtype=torch.float32)
    dy = yy[None] - (cy + offsets[:, 0, None, None])
    dx = xx[None] - (cx + offsets[:, 1, None, None])
    truth = torch.from_numpy(mask.astype(bool))
    out = {}
    scales = torch.tensor(SCALES, dtype=torch.float32).view(-1, 1, 1, 1)
    for shape in sd.SHAPES:
        radius = scales * math.sqrt(area / AREA[shape])
        inside = sd.coverage(shape, dx, dy, radius) >= 0.5  # (scales, shifts, H, W), drawn as the data draws it
        inter = (inside & truth).sum((-2, -1)).float()
        union = (inside | truth).sum((-2, -1)).float()
        out[shape] = float((inter / union).max())
    return out


def classify(mask: np.ndarray) -> str:
    scores = fit(mask)
    return max(scores, key=scores.get)
