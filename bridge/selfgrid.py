"""Self-attention pooled to a coarse grid: region maps chosen after the run, and diffused attention.

With ``self_grid`` N a run records, per step, its self-attention matrix pooled to a grid of
N cells on the latent's long side (at most the latent's own size): ``(cells, gh, gw)``, row
``a`` being where the pixels of cell ``a`` look — per layer, the mean of cell ``a``'s query
rows of softmax(QKᵀ/√d) (heads averaged, conditional images summed), their key mass gathered
into the cells each key position overlaps, summed over layers.  A row's mass is therefore the
number of self-attention layer calls times conditional images; :func:`transition` makes the
rows sum to 1.  Size: cells² float16 per step, 2 MiB at N = 32 (square), 128 KiB at 16.

From that matrix, without re-rendering:

- :func:`region_map`: a region's map, its coverage of the grid times the matrix (the live
  self maps at the grid's resolution);
- :func:`diffuse`: diffused attention (DAAM-I2I's "diffused pixel attention"): start from the
  region's coverage, then repeatedly re-weight the rows by the current map (m ← m·T), cutting
  values under ``cut`` × the map's peak and renormalising, so attention spreads from the seed
  through what it looks at, and stops where it fades.

Light module (numpy): export and timelapse use it without torch.
"""

from __future__ import annotations

import numpy as np

DIFFUSE_ITERATIONS = 3  # expansions after the seed's own map
DIFFUSE_CUT = 0.1  # values under this fraction of a step's peak are dropped before the next


def grid_shape(grid: int, latent_hw: tuple[int, int]) -> tuple[int, int]:
    """(gh, gw): ``grid`` cells on the long side, the aspect kept, never finer than the latent."""
    h, w = latent_hw
    long = min(int(grid), max(h, w))
    if h >= w:
        return long, max(1, min(w, round(long * w / h)))
    return max(1, min(h, round(long * h / w))), long


def _overlap_1d(cells: int, positions: int) -> np.ndarray:
    """(cells, positions): the length of each cell's interval that each position's covers (unit line)."""
    c = np.arange(cells + 1) / cells
    p = np.arange(positions + 1) / positions
    return np.clip(np.minimum(c[1:, None], p[None, 1:]) - np.maximum(c[:-1, None], p[None, :-1]), 0, None)


def pooling(grid_hw: tuple[int, int], layer_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(queries (cells, h·w), keys (h·w, cells)) for a layer's grid, row-major.

    ``queries @ P`` averages each cell's query rows (weights by overlap, summing to 1 per cell);
    ``P @ keys`` gathers each key position's mass into the cells it overlaps (each position's
    weights sum to 1, so a row's mass is kept)."""
    (gh, gw), (h, w) = grid_hw, layer_hw
    overlap = np.kron(_overlap_1d(gh, h), _overlap_1d(gw, w))  # (gh·gw, h·w)
    queries = overlap / overlap.sum(axis=1, keepdims=True)
    keys = (overlap / overlap.sum(axis=0, keepdims=True)).T
    return queries, keys


def transition(matrix: np.ndarray) -> np.ndarray:
    """The recorded ``(cells, gh, gw)`` as a row-stochastic (cells, cells) matrix."""
    t = np.asarray(matrix, np.float64).reshape(matrix.shape[0], -1)
    return t / np.maximum(t.sum(axis=1, keepdims=True), 1e-30)


def region_map(matrix: np.ndarray, region, image_hw: tuple[int, int]) -> np.ndarray:
    """A region's map on the grid, (gh, gw): its coverage of the grid's cells times the rows."""
    gh, gw = matrix.shape[1:]
    return (region.coverage(gh, gw, image_hw) @ transition(matrix)).reshape(gh, gw)


def diffuse(matrix: np.ndarray, region, image_hw: tuple[int, int], iterations: int = DIFFUSE_ITERATIONS,
            cut: float = DIFFUSE_CUT) -> np.ndarray:
    """Diffused attention from a region, (gh, gw), summing to 1."""
    gh, gw = matrix.shape[1:]
    t = transition(matrix)
    m = region.coverage(gh, gw, image_hw)
    for _ in range(1 + int(iterations)):
        m = m @ t
        m = np.where(m >= cut * m.max(), m, 0.0)
        m = m / m.sum()
    return m.reshape(gh, gw)
