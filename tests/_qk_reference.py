"""An independent, plain DAAM reference: hook each cross-attention's q and k, redo it by hand.

Per captured layer call: for every image of the conditional half and every head, an eager
softmax(q·kᵀ/√d) in float64; the mean over heads; every token's (h, w) map — h and w read
from the transformer block's own 4-D input, not derived — bicubic-upsampled to the map size
and clamped ≥ 0; summed over layers per step; each word = mean of its tokens' maps; the
cumulative map = sum over steps.  Nothing here is shared with bridge/attention.
"""

from __future__ import annotations

import base64

import math

import numpy as np
import torch
import torch.nn.functional as F


class QKRecorder:
    """Forward hooks on every ``attention`` module's to_q / to_k (attn2: cross-attention; attn1:
    self-attention) and on each transformer's input."""

    def __init__(self, unet, attention: str = "attn2"):
        self.unet, self.attention = unet, attention
        self.calls: list[dict] = []
        self.boundaries: list[int] = []
        self._hooks = []
        self._hw: dict[str, tuple[int, int]] = {}

    def __enter__(self):
        for name, module in self.unet.named_modules():
            if type(module).__name__ == "Transformer2DModel":
                self._hooks.append(module.register_forward_pre_hook(self._shape_hook(name), with_kwargs=True))
            if name.endswith(self.attention):
                owner = name.split(".transformer_blocks")[0]
                self._hooks.append(module.to_q.register_forward_hook(self._q_hook(name, owner, module.heads)))
                self._hooks.append(module.to_k.register_forward_hook(self._k_hook()))
        return self

    def __exit__(self, *exc):
        for h in self._hooks:
            h.remove()

    def _shape_hook(self, name):
        def hook(module, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            self._hw[name] = (int(x.shape[2]), int(x.shape[3]))
        return hook

    def _q_hook(self, name, owner, heads):
        def hook(module, args, out):
            self.calls.append({"name": name, "q": out.detach().double().clone(), "heads": heads, "hw": self._hw[owner]})
        return hook

    def _k_hook(self):
        def hook(module, args, out):
            self.calls[-1]["k"] = out.detach().double().clone()
        return hook

    def mark_step(self):
        self.boundaries.append(len(self.calls))

    def reference(self, token_indices, cfg: bool, map_hw) -> list[tuple[np.ndarray, np.ndarray]]:
        """[(step word maps, cumulative word maps)] per step, float64 (words, map_h, map_w)."""
        steps, start = [], 0
        for end in self.boundaries:
            layers = []
            for call in self.calls[start:end]:
                q, k, heads = call["q"], call["k"], call["heads"]
                b = q.shape[0]
                rows = range(b // 2, b) if cfg else range(b)
                d = q.shape[-1] // heads
                acc = torch.zeros(q.shape[1], k.shape[1], dtype=torch.float64)
                for i in rows:
                    per_image = torch.zeros_like(acc)
                    for head in range(heads):
                        qh = q[i, :, head * d:(head + 1) * d]
                        kh = k[i, :, head * d:(head + 1) * d]
                        per_image += torch.softmax(qh @ kh.T / math.sqrt(d), dim=-1)
                    acc += per_image / heads
                layers.append((acc, call["hw"]))
            steps.append(layers)
            start = end
        return daam_reference(steps, token_indices, map_hw)


def daam_reference(steps, token_indices, map_hw) -> list[tuple[np.ndarray, np.ndarray]]:
    """DAAM from per-layer attention: ``steps`` is, per step, [(probabilities (positions, tokens)
    summed over the conditional images and averaged over heads, (h, w) of the layer)].  Each
    token's map bicubic-upsampled and clamped ≥ 0, summed over layers; a word is the mean of
    its tokens; the cumulative map the running sum over steps."""
    out, cumulative = [], None
    for layers in steps:
        token_maps = None
        for probs, (h, w) in layers:
            maps = probs.T.reshape(1, -1, h, w)
            up = F.interpolate(maps, size=tuple(map_hw), mode="bicubic", align_corners=False)[0].clamp(min=0)
            token_maps = up if token_maps is None else token_maps + up
        words = torch.stack([token_maps[list(ix)].mean(0) for ix in token_indices]).numpy()
        cumulative = words.copy() if cumulative is None else cumulative + words
        out.append((words, cumulative.copy()))
    return out


# --------------------------------------------------------------------------- query regions


def _winding_inside(px, py, poly) -> bool:
    wn = 0
    for (x0, y0), (x1, y1) in zip(poly, poly[1:] + poly[:1]):
        cross = (x1 - x0) * (py - y0) - (px - x0) * (y1 - y0)
        if y0 <= py < y1 and cross > 0:
            wn += 1
        elif y1 <= py < y0 and cross < 0:
            wn -= 1
    return wn != 0


def reference_coverage(spec: dict, h: int, w: int, image_hw) -> np.ndarray:
    """A region's weights over an h × w layer grid, by its own point sampling (the definition
    bridge/regions.py documents: 4 × 4 samples per cell for polygons; a box sampled finely
    enough to be exact on the test grids), normalised to sum to 1."""
    H, W = image_hw
    cy, cx = H / h, W / w
    cover = np.zeros((h, w))
    if "pixel" in spec:
        x, y = spec["pixel"]
        cover[min(int(y // cy), h - 1), min(int(x // cx), w - 1)] = 1.0
    elif "mask" in spec:  # the mask's own pixel under each of 4 × 4 sample points per cell
        (mw, mh), raw = spec["mask"]["size"], base64.b64decode(spec["mask"]["bits"])
        bit = lambda r, c: (raw[(r * mw + c) // 8] >> (7 - (r * mw + c) % 8)) & 1  # noqa: E731
        for i in range(h):
            for j in range(w):
                cover[i, j] = sum(bit(min(int((i + (a + 0.5) / 4) * cy * mh / H), mh - 1),
                                      min(int((j + (b + 0.5) / 4) * cx * mw / W), mw - 1))
                                  for a in range(4) for b in range(4)) / 16
    else:
        if "box" in spec:
            x0, y0, x1, y1 = spec["box"]
            inside = lambda px, py: x0 <= px <= x1 and y0 <= py <= y1  # noqa: E731
        else:
            poly = [tuple(p) for p in spec["polygon"]]
            inside = lambda px, py: _winding_inside(px, py, poly)  # noqa: E731
        s = 4 if "polygon" in spec else 16  # a box: fine enough to be exact on these grids
        for i in range(h):
            for j in range(w):
                hits = sum(inside((j + (b + 0.5) / s) * cx, (i + (a + 0.5) / s) * cy) for a in range(s) for b in range(s))
                cover[i, j] = hits / (s * s)
    return cover.reshape(-1) / cover.sum()
