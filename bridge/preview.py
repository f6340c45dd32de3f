"""Cheap per-step previews: a linear latent → RGB map, and an optional full VAE decode.

The linear map (one 3×C matrix and a bias) turns a latent into a rough colour image at latent
resolution for the price of a 1×1 convolution, so every step can carry a preview.  The
factors are fitted per model by least squares, ``[z, 1] @ W ≈ rgb`` with the images
average-pooled to latent resolution: the built-in models ship a fit on their own generations
(``latent_rgb.json`` beside model_index.json); any other model is fitted once when it loads,
on synthetic images through its own VAE (one small encode and decode).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LATENT_RGB_FILE = "latent_rgb.json"


@dataclass(frozen=True)
class LatentRGB:
    factors: tuple[tuple[float, float, float], ...]  # (latent_channels, 3)
    bias: tuple[float, float, float]

    def to_dict(self) -> dict:
        return {"factors": [list(r) for r in self.factors], "bias": list(self.bias)}

    @classmethod
    def from_dict(cls, d: dict) -> "LatentRGB":
        return cls(tuple(tuple(float(x) for x in r) for r in d["factors"]), tuple(float(x) for x in d["bias"]))


def save_latent_rgb(model_dir: str | Path, fit: LatentRGB) -> None:
    (Path(model_dir) / LATENT_RGB_FILE).write_text(json.dumps(fit.to_dict(), indent=2) + "\n", encoding="utf-8")


def load_latent_rgb(model_dir: str | Path | None) -> LatentRGB | None:
    if model_dir is None:
        return None
    path = Path(model_dir) / LATENT_RGB_FILE
    return LatentRGB.from_dict(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else None


def fit_pairs(latents, images) -> LatentRGB:
    """Least squares ``[z, 1] @ W ≈ rgb`` of pipeline-space latents (B, C, h, w) against the
    images (B, 3, H, W, in [-1, 1]) they stand for, average-pooled to latent resolution."""
    import torch
    import torch.nn.functional as F

    z = latents.float().cpu()
    b, channels, h, w = z.shape
    rgb = F.adaptive_avg_pool2d(images.float().cpu(), (h, w))  # the colour each latent pixel stands for
    x = torch.cat([z, torch.ones(b, 1, h, w)], 1).permute(0, 2, 3, 1).reshape(-1, channels + 1)
    y = rgb.permute(0, 2, 3, 1).reshape(-1, 3)
    fit = torch.linalg.lstsq(x.double(), y.double()).solution.float()  # (C + 1, 3)
    return LatentRGB(tuple(tuple(float(v) for v in r) for r in fit[:channels].tolist()), tuple(float(v) for v in fit[channels].tolist()))


def synthetic_images(count: int, size: int, seed: int = 0):
    """Colourful test images (a gradient and a few flat discs and boxes), (count, 3, size, size)
    in [-1, 1]: what pictures are made of, for fitting a preview without any data set."""
    import torch

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((count, 3, size, size), np.float32)
    for n in range(count):
        a, b, angle = rng.uniform(-1, 1, 3), rng.uniform(-1, 1, 3), rng.uniform(0, 2 * np.pi)
        t = np.clip(np.cos(angle) * xx + np.sin(angle) * yy, 0, 1)
        img = a[:, None, None] * (1 - t) + b[:, None, None] * t
        for _ in range(rng.integers(2, 6)):
            colour, (cx, cy), r = rng.uniform(-1, 1, 3), rng.uniform(0, 1, 2), rng.uniform(0.05, 0.35)
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r if rng.random() < 0.5 else \
                (abs(xx - cx) < r) & (abs(yy - cy) < r * rng.uniform(0.3, 1.5))
            img = np.where(inside[None], colour[:, None, None], img)
        out[n] = img
    return torch.from_numpy(out)


def fit_latent_rgb(vae, count: int = 8, size: int = 128, seed: int = 0) -> LatentRGB:
    """Fit the preview of any VAE without data: encode synthetic images, decode their latents
    (what a full preview would show) and fit the latents to those decodes.

    Latents are in pipeline space (the scheduler's): ``(mean − shift_factor) · scaling_factor``.
    Random latents, used before, decode to near-uniform mush on VAEs with a weak KL term, and
    their fit was no better than one flat colour.  A model whose own latents sit far from what
    its encoder produces (the built-in shapes model) ships a fit on its own generations instead
    (``python -m bridge.builtin.fit_preview``)."""
    import torch

    param = next(vae.parameters())
    scale = float(getattr(vae.config, "scaling_factor", 1.0) or 1.0)
    shift = float(getattr(vae.config, "shift_factor", 0.0) or 0.0)
    images = synthetic_images(count, size, seed)
    with torch.no_grad():
        posterior = vae.encode(images.to(param.device, param.dtype)).latent_dist
        latents = (posterior.mean.float() - shift) * scale
    decoded = vae_decode(vae, vae_space(vae, latents)).float().clamp(-1, 1)
    return fit_pairs(latents, decoded)


def vae_space(vae, latents):
    """Pipeline-space latents (what the scheduler sees) → the VAE's input, as pipelines decode:
    ``z / scaling_factor + shift_factor`` (SD3 and Flux VAEs shift; SD's have no shift)."""
    cfg = vae.config
    scale = float(getattr(cfg, "scaling_factor", 1.0) or 1.0)
    shift = getattr(cfg, "shift_factor", None)
    z = latents / scale
    return z + float(shift) if shift else z


def vae_decode(vae, latents):
    """VAE decode in the VAE's dtype, or in float32 for VAEs that overflow in half precision.

    SDXL's VAE says so with ``force_upcast``; the pipeline upcasts it the same way.
    """
    import torch

    param = next(vae.parameters())
    upcast = param.dtype != torch.float32 and bool(getattr(vae.config, "force_upcast", False))
    with torch.no_grad():
        if not upcast:
            return vae.decode(latents.to(param.device, param.dtype)).sample
        vae.to(torch.float32)
        try:
            return vae.decode(latents.to(param.device, torch.float32)).sample
        finally:
            vae.to(param.dtype)


class Previewer:
    """Turns latents into a float RGB (0..255) preview tensor on the device.

    ``layout`` (the model family's ``spatial_latents``) turns the pipeline's latents into
    (batch, channels, h, w) first, so packed layouts preview like spatial ones.
    """

    def __init__(self, fit: LatentRGB, device, layout=None):
        import torch

        self.weight = torch.tensor(fit.factors, device=device, dtype=torch.float32)  # (C, 3)
        self.bias = torch.tensor(fit.bias, device=device, dtype=torch.float32)
        self.layout = layout or (lambda latents: latents)

    def linear(self, latents):
        """Latents (first image) → (h, w, 3) float RGB in 0..255 on the device, at latent resolution."""
        import torch

        rgb = torch.einsum("chw,cr->hwr", self.layout(latents)[0].float(), self.weight) + self.bias
        return ((rgb.clamp(-1, 1) + 1) * 127.5)

    def decode(self, pipe, latents):
        """Full decode by ``pipe``'s VAE of the current latents (first image) → (H, W, 3) float RGB in 0..255 on the device."""
        image = vae_decode(pipe.vae, vae_space(pipe.vae, self.layout(latents)[:1]))[0]
        return ((image.float().clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0)


def upscale(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Host-side bilinear resize of a float (h, w, 3) preview to uint8 (height, width, 3)."""
    from PIL import Image

    img = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    if img.shape[:2] == (height, width):
        return img
    return np.asarray(Image.fromarray(img, "RGB").resize((width, height), Image.BILINEAR))
