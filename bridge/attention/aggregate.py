"""DAAM aggregation on the device: per-layer attention → per-token maps → per-word step maps.

One ``Aggregator`` lives for one run.  Every captured attention call hands over its
conditional rows' probabilities with the layer's map size (h, w), which the model family
knows; the aggregator averages them over heads, keeps the tokens of the prompt's words and
holds the (positions, tokens) result until the step ends.  At the end
of a step the layers of each resolution are upsampled together (bicubic, to the map size),
clamped ≥ 0 per layer and summed; the token maps become per-word maps (mean over each word's
subword tokens, as in DAAM), are added to the running cumulative map, and the per-step
buffers are dropped, so memory stays constant however many steps run.  Grouping the layers
by resolution keeps the number of device kernels per step small, which matters on GPUs where
a step takes a few milliseconds.

Heads are averaged (not summed) and layers and steps summed: values then stay below
layers × steps, well inside float16, the dtype every map is sent and stored in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def word_matrix(token_indices, sequence_length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The token positions to keep (K,) and the (words, K) averaging matrix from tokens to words."""
    flat = sorted({i for ix in token_indices for i in ix})
    if any(t >= sequence_length for t in flat):
        raise ValueError("a word's token position is beyond the text encoder's sequence")
    column = {t: c for c, t in enumerate(flat)}
    matrix = torch.zeros(len(token_indices), max(len(flat), 1), dtype=torch.float32)
    for w, ix in enumerate(token_indices):
        for t in ix:
            matrix[w, column[t]] = 1.0 / len(ix)
    keep = torch.tensor(flat or [0], dtype=torch.long)
    return keep.to(device), matrix.to(device)


class Aggregator:
    """Accumulates one run's DAAM maps on ``device``."""

    def __init__(self, token_indices, sequence_length: int, latent_hw, map_hw, cfg: bool, device):
        self.latent_hw = tuple(int(x) for x in latent_hw)
        self.map_hw = tuple(int(x) for x in map_hw)
        self.cfg = bool(cfg)
        self.keep, self.matrix = word_matrix(token_indices, sequence_length, device)
        self.cumulative = torch.zeros(self.matrix.shape[0], *self.map_hw, device=device, dtype=torch.float32)
        self._pending: dict[tuple[int, int], list[torch.Tensor]] = {}  # layer (h, w) → this step's (h·w, K) per layer

    @property
    def layer_calls(self) -> int:
        return sum(len(v) for v in self._pending.values())

    def add(self, probs: torch.Tensor, hw: tuple[int, int]) -> None:
        """Add one layer's conditional probabilities, shape (B, heads, h·w, tokens), row-major over (h, w)."""
        h, w = hw
        if probs.shape[2] != h * w:
            raise ValueError(f"a layer map of {h}×{w} cannot hold {probs.shape[2]} positions")
        per_token = probs.index_select(-1, self.keep).mean(dim=1)  # (B, N, K): all heads at once
        per_token = per_token[0] if per_token.shape[0] == 1 else per_token.sum(dim=0)
        self._pending.setdefault((h, w), []).append(per_token)

    def token_maps(self) -> torch.Tensor:
        """This step's (K, map_h, map_w) token maps: upsampled, clamped per layer, summed."""
        total = None
        for (h, w), layers in self._pending.items():
            stacked = torch.stack(layers).transpose(1, 2).reshape(len(layers), -1, h, w).float()  # (L, K, h, w)
            up = F.interpolate(stacked, size=self.map_hw, mode="bicubic", align_corners=False).clamp_(min=0).sum(dim=0)
            total = up if total is None else total.add_(up)
        if total is None:
            total = torch.zeros(self.keep.numel(), *self.map_hw, device=self.cumulative.device)
        return total

    def end_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's per-word maps and the new cumulative maps (device tensors, float32)."""
        step = torch.einsum("nk,kyx->nyx", self.matrix, self.token_maps())
        self._pending.clear()
        self.cumulative += step
        return step, self.cumulative
