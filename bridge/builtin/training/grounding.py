"""Attention during training: explicit processors that keep the attention probabilities, the
grounding loss that pulls each object word's attention onto its object's mask, and the
self-grounding loss that pulls an object's pixels' self-attention onto the object."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class TrainingAttention:
    """Explicit attention that can keep its probabilities (heads averaged) in ``store``.

    Training only: the shipped pipeline uses diffusers' default processors.  At these head sizes
    (8–16 channels) the explicit form is also faster on a CPU than the fused kernel.
    """

    def __init__(self, store: list | None = None):
        self.store = store

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        b, n, _ = hidden_states.shape
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q = attn.to_q(hidden_states)
        k = attn.to_k(context)
        v = attn.to_v(context)
        h = attn.heads
        q, k, v = (x.view(b, -1, h, x.shape[-1] // h).transpose(1, 2) for x in (q, k, v))
        probs = torch.softmax((q * attn.scale) @ k.transpose(-1, -2), dim=-1)  # (B, heads, N, L)
        if self.store is not None:
            self.store.append(probs.float().mean(1))
        out = (probs.to(v.dtype) @ v).transpose(1, 2).reshape(b, n, -1)
        return attn.to_out[1](attn.to_out[0](out))


def training_processors(unet, store: list | None, self_store: list | None = None):
    """Explicit attention everywhere; cross-attention layers also fill ``store`` and
    self-attention layers ``self_store``, where given."""
    return {
        name: TrainingAttention(store if name.endswith("attn2.processor") else self_store)
        for name in unet.attn_processors
    }


def grounding_loss(probs_list, masks, owner, pixel_weight: float = 0.0, sample_weight=None):
    """Mean over (token, object) pairs of (1 − share of the token's attention inside the mask)²,
    plus ``pixel_weight`` × the pixel term.  ``sample_weight`` (B,), optional, scales each
    training image's share of both terms (see :func:`noise_tilt`).

    The first (TokenCompose's token loss) only punishes attention outside the mask, so a token may
    settle on its object's centre.  The pixel term (TokenCompose's pixel loss) is the binary cross
    entropy between the token's per-pixel probability and the mask, which asks for the whole
    object to be covered.

    probs_list: (B, N, L) per cross-attention layer; masks (B, K, H, W) object coverage at any
    resolution (pooled to each layer's); owner (B, L).
    """
    k = masks.shape[1]
    assign = (owner.unsqueeze(-1) == torch.arange(k, device=owner.device)).float()  # (B, L, K)
    if assign.sum() == 0:
        return masks.new_zeros(())
    w = torch.ones(owner.shape[0], device=owner.device) if sample_weight is None else sample_weight.float()
    pooled: dict[int, torch.Tensor] = {}
    losses = []
    for probs in probs_list:
        side = int(math.isqrt(probs.shape[1]))  # training latents are square
        if side not in pooled:
            pooled[side] = F.adaptive_avg_pool2d(masks.float(), side).flatten(2)  # (B, K, N)
        inside = torch.einsum("bnt,bkn->btk", probs, pooled[side])
        share = inside / probs.sum(1).unsqueeze(-1).clamp_min(1e-8)
        loss = ((1 - share) ** 2 * assign * w.view(-1, 1, 1)).sum() / assign.sum()
        if pixel_weight > 0:
            token_mask = torch.einsum("btk,bkn->btn", assign, pooled[side])  # each owned token's object mask
            owned = assign.sum(-1)  # (B, L): 1 where the token names an object
            p = probs.transpose(1, 2).clamp(1e-6, 1 - 1e-6)  # (B, L, N)
            bce = F.binary_cross_entropy(p, token_mask, reduction="none").mean(-1)
            loss = loss + pixel_weight * (bce * owned * w.view(-1, 1)).sum() / owned.sum()
        losses.append(loss)
    return torch.stack(losses).mean()


def self_grounding_loss(probs_list, masks, cover_weight: float = 0.0, query_power: float = 1.0):
    """Mean over drawn objects of (1 − share of its pixels' self-attention on the object)², plus
    ``cover_weight`` × the cover term.

    The share is what bench/self_attention.py measures at inference: the object's query rows,
    weighted by its coverage of the layer's grid, and the part of their attention that falls on
    keys inside it (weighted by coverage too).  A pixel that attends only to itself satisfies it,
    so the cover term (the self-attention analogue of :func:`grounding_loss`'s pixel term) asks
    each of the object's rows to spread over the whole object: KL(object ‖ row), the object's
    coverage normalised to a distribution, averaged over its rows as the share is.
    ``query_power`` weights the query rows by the coverage raised to it: above 1 the object's
    interior counts more than its rim, whose pixels may look across the edge to draw it (the
    bench's boxes sit inside the objects).
    probs_list: (B, N, N) per self-attention layer; masks (B, K, H, W) at any resolution (pooled
    to each layer's).
    """
    drawn = (masks.flatten(2).sum(-1) > 0).float()  # (B, K): the same on every layer's grid
    if drawn.sum() == 0:
        return masks.new_zeros(())
    losses = []
    for probs in probs_list:
        m = F.adaptive_avg_pool2d(masks.float(), int(math.isqrt(probs.shape[1]))).flatten(2)  # (B, K, N)
        q = m if query_power == 1 else m ** query_power  # the query rows' weights
        rows = q.sum(-1).clamp_min(1e-8)  # (B, K)
        loss = (1 - torch.einsum("bkq,bqn,bkn->bk", q, probs, m) / rows) ** 2
        if cover_weight > 0:
            target = m / m.sum(-1, keepdim=True).clamp_min(1e-8)  # (B, K, N): the object as a distribution
            cross = -torch.einsum("bkq,bqn,bkn->bk", q, probs.clamp_min(1e-8).log(), target) / rows
            entropy = -(target * target.clamp_min(1e-8).log()).sum(-1)
            loss = loss + cover_weight * (cross - entropy)
        losses.append((loss * drawn).sum() / drawn.sum())
    return torch.stack(losses).mean()


def noise_tilt(t, num_timesteps: int, tilt: float):
    """Per-image grounding weight 1 + tilt·(2t/T − 1): mean 1 over uniform t, and for tilt 1
    it runs from 0 at t = 0 to 2 at t = T.

    Tilting towards high noise is for the cumulative (all-step) map: a trained model's low-noise
    steps already attend inside the objects, while its high-noise steps, where the layout is
    decided, stay diffuse and blur the sum.  Off in the shipped recipe: at the model's guidance
    (3) a full run with tilt 1 scored within run-to-run variation of the shipped weights
    (docs/MODEL.md).
    """
    return 1 + tilt * (2 * t.float() / num_timesteps - 1)


def concept_loss(saliency_list, masks, concept_index, concepts: int, keep=None):
    """Cross entropy between ConceptAttention's segmentation and the scene's: per image token,
    the concepts' saliency (averaged over the blocks, as the capture averages them) against the
    token's share of each object — under the object's concept — and of the background (the last
    concept).

    saliency_list: (B, N, concepts) softmax over concepts per block; masks (B, K, H, W) object
    coverage (pooled to the token grid); concept_index (B, K) each object's concept, −1 for none;
    ``keep`` (B,) bool, optional: the images that count.
    """
    saliency = torch.stack(saliency_list).mean(0)  # (B, N, C)
    side = int(math.isqrt(saliency.shape[1]))
    m = F.adaptive_avg_pool2d(masks.float(), side).flatten(2)  # (B, K, N)
    present = (concept_index >= 0).float().unsqueeze(-1)
    target = torch.zeros(saliency.shape[0], concepts, saliency.shape[1], device=saliency.device)
    target.scatter_add_(1, concept_index.clamp_min(0).unsqueeze(-1).expand_as(m), m * present)
    target[:, -1] = (1 - target[:, :-1].sum(1)).clamp_min(0)
    target = target / target.sum(1, keepdim=True).clamp_min(1e-8)
    ce = -(target.transpose(1, 2) * saliency.clamp_min(1e-8).log()).sum(-1).mean(-1)  # (B,)
    if keep is None:
        return ce.mean()
    keep = keep.float()
    return (ce * keep).sum() / keep.sum().clamp_min(1)
