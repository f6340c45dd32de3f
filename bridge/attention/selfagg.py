"""Self-attention maps of query regions (DAAM-I2I), aggregated on the device per step.

For each region and each self-attention layer call: the region's query rows of
softmax(QKᵀ/√d) — only those rows, never the layer's full (h·w)² matrix — weighted by the
region's coverage of that layer's grid (:meth:`bridge.regions.Region.coverage`), conditional
rows only, averaged over heads.  At the end of a step each layer's (h, w) map is upsampled
bicubically to the map size, clamped ≥ 0, and the layers are summed, as the word maps are.

Regions may change between steps (:meth:`SelfAggregator.set_regions`); a step uses the
regions it started with.  With no regions the self-attention layers are not read at all.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


class SelfAggregator:
    def __init__(self, image_hw: tuple[int, int], map_hw: tuple[int, int], device):
        self.image_hw = tuple(int(x) for x in image_hw)
        self.map_hw = tuple(int(x) for x in map_hw)
        self.device = device
        self.regions: tuple = ()
        self._grids: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}  # (h, w) → (rows, weights)
        self._pending: dict[tuple[int, int], list[torch.Tensor]] = {}

    @property
    def active(self) -> bool:
        return bool(self.regions)

    def set_regions(self, regions) -> None:
        """The regions of the steps from now on (the current step's maps are dropped if they change)."""
        regions = tuple(regions or ())
        if regions != self.regions:
            self.regions, self._grids, self._pending = regions, {}, {}

    def rows(self, h: int, w: int) -> torch.Tensor:
        """The query positions (U,) any region covers on an ``h`` × ``w`` layer grid."""
        return self._grid(h, w)[0]

    def _grid(self, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        grid = self._grids.get((h, w))
        if grid is None:
            cover = np.stack([r.coverage(h, w, self.image_hw) for r in self.regions])  # (R, h·w)
            used = np.flatnonzero(cover.any(axis=0))
            grid = (torch.from_numpy(used).to(self.device),
                    torch.from_numpy(cover[:, used]).to(self.device, torch.float32))  # (R, U)
            self._grids[(h, w)] = grid
        return grid

    def add(self, probs: torch.Tensor, hw: tuple[int, int]) -> None:
        """One layer call's probabilities of the covered rows: (B, heads, U, h·w)."""
        _, weights = self._grid(*hw)
        rows = probs.mean(dim=1).sum(dim=0)  # (U, h·w): heads averaged, conditional images summed
        self._pending.setdefault(hw, []).append(weights @ rows)  # (R, h·w)

    def end_step(self) -> torch.Tensor | None:
        """This step's (R, map_h, map_w) maps, or None without regions."""
        if not self.regions:
            return None
        total = torch.zeros(len(self.regions), *self.map_hw, device=self.device)
        for (h, w), layers in self._pending.items():
            stacked = torch.stack(layers).reshape(len(layers), len(self.regions), h, w).float()
            total += F.interpolate(stacked, size=self.map_hw, mode="bicubic", align_corners=False).clamp_(min=0).sum(dim=0)
        self._pending = {}
        return total


class SelfGrid:
    """Each step's self-attention pooled to a coarse grid (bridge/selfgrid.py), on the device.

    A layer call's query rows are taken in chunks of at most ``chunk_bytes`` of probabilities,
    so the full (h·w)² matrix of a large layer never exists at once; each chunk is pooled at
    once into the (cells, cells) sum."""

    def __init__(self, grid_hw: tuple[int, int], device, chunk_bytes: int = 64 << 20):
        self.grid_hw = tuple(int(x) for x in grid_hw)
        self.cells = self.grid_hw[0] * self.grid_hw[1]
        self.device = device
        self.chunk_bytes = chunk_bytes
        self._pooling: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self._sum: torch.Tensor | None = None

    def _pool(self, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        if hw not in self._pooling:
            from ..selfgrid import pooling

            q, k = pooling(self.grid_hw, hw)
            self._pooling[hw] = (torch.from_numpy(q).to(self.device, torch.float32),
                                 torch.from_numpy(k).to(self.device, torch.float32))
        return self._pooling[hw]

    def add(self, probabilities, hw: tuple[int, int], batch_heads: int) -> None:
        """``probabilities(rows)`` → (B, heads, len(rows), h·w) for the query rows asked."""
        queries, keys = self._pool(hw)
        n = hw[0] * hw[1]
        chunk = max(1, self.chunk_bytes // max(1, batch_heads * n * 4))
        total = torch.zeros(self.cells, self.cells, device=self.device)
        for first in range(0, n, chunk):
            rows = torch.arange(first, min(n, first + chunk), device=self.device)
            probs = probabilities(rows)
            if probs is None:
                return
            pooled_keys = probs.mean(dim=1).sum(dim=0) @ keys  # (C, cells)
            total += queries[:, first:first + len(rows)] @ pooled_keys
        self._sum = total if self._sum is None else self._sum + total

    def end_step(self) -> torch.Tensor | None:
        """This step's (cells, gh, gw), or None if no layer was read."""
        out, self._sum = self._sum, None
        return None if out is None else out.reshape(self.cells, *self.grid_hw)
