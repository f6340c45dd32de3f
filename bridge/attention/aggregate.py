"""DAAM aggregation on the device: per-layer attention → per-token maps → per-word step maps.

One ``Aggregator`` lives for one run.  Every captured cross-attention call adds its
conditional-half probabilities, averaged over heads, bicubic-upsampled to the map size and
clamped ≥ 0, into a (tokens, map_h, map_w) buffer.  At the end of a step the buffer becomes
per-word maps (mean over each word's subword tokens, as in DAAM), is added to the running
cumulative map and cleared, so memory stays constant however many steps run.

Heads are averaged (not summed) and layers and steps summed: values then stay below
layers × steps, well inside float16, the dtype every map is sent and stored in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def feature_size(n: int, latent_hw: tuple[int, int]) -> tuple[int, int, int]:
    """(h, w, downsampling) of a layer whose feature map has ``n`` positions.

    UNet down-samplers are stride-2 convolutions with padding 1, so each level has
    ceil(h / 2) × ceil(w / 2) positions; walking the levels from the latent size finds the one
    with n positions.  This works for any aspect ratio (never sqrt(n)).
    """
    h, w = latent_hw
    down = 1
    while h * w > n and (h > 1 or w > 1):
        h, w, down = -(-h // 2), -(-w // 2), down * 2
    if h * w != n:
        raise ValueError(f"a cross-attention layer has {n} positions, which matches no level of a {latent_hw} latent")
    return h, w, down


def word_matrix(token_indices, sequence_length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The token positions to keep (K,) and the (words, K) averaging matrix from tokens to words."""
    flat = sorted({i for ix in token_indices for i in ix})
    column = {t: c for c, t in enumerate(flat)}
    matrix = torch.zeros(len(token_indices), max(len(flat), 1), dtype=torch.float32)
    for w, ix in enumerate(token_indices):
        for t in ix:
            matrix[w, column[t]] = 1.0 / len(ix)
    if any(t >= sequence_length for t in flat):
        raise ValueError("a word's token position is beyond the text encoder's sequence")
    keep = torch.tensor(flat or [0], dtype=torch.long)
    return keep.to(device), matrix.to(device)


class Aggregator:
    """Accumulates one run's DAAM maps on ``device``."""

    def __init__(self, token_indices, sequence_length: int, latent_hw, map_hw, cfg: bool, device):
        self.latent_hw = tuple(int(x) for x in latent_hw)
        self.map_hw = tuple(int(x) for x in map_hw)
        self.cfg = bool(cfg)
        self.keep, self.matrix = word_matrix(token_indices, sequence_length, device)
        self.step_tokens = torch.zeros(self.keep.numel(), *self.map_hw, device=device, dtype=torch.float32)
        self.cumulative = torch.zeros(self.matrix.shape[0], *self.map_hw, device=device, dtype=torch.float32)
        self.layer_calls = 0

    def conditional(self, batch: int) -> slice:
        """Which rows of an attention batch are conditional: CFG stacks [uncond, cond]."""
        if self.cfg and batch % 2 == 0:
            return slice(batch // 2, batch)
        return slice(0, batch)

    def add(self, probs: torch.Tensor) -> None:
        """Add one layer's conditional probabilities, shape (B, heads, N, tokens)."""
        b, _, n, _ = probs.shape
        h, w, _ = feature_size(n, self.latent_hw)
        per_token = probs.index_select(-1, self.keep).mean(dim=1).sum(dim=0)  # (N, K): all heads at once
        maps = per_token.T.reshape(1, -1, h, w).float()
        up = F.interpolate(maps, size=self.map_hw, mode="bicubic", align_corners=False)
        self.step_tokens += up[0].clamp_(min=0)
        self.layer_calls += 1

    def end_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's per-word maps and the new cumulative maps (device tensors, float32)."""
        step = torch.einsum("nk,kyx->nyx", self.matrix, self.step_tokens)
        self.cumulative += step
        self.step_tokens.zero_()
        self.layer_calls = 0
        return step, self.cumulative
