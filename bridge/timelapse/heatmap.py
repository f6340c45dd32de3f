"""Turn one word's attention map into pictures: upsampled heat, colour heat map, overlay.

Maps arrive at the capture resolution (e.g. 64×64) and unnormalised; pictures are at the
image's resolution.  Upsampling is bicubic, as DAAM does, then clamped at 0 because bicubic
overshoots below zero next to sharp peaks.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from . import colormaps


def upsample(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of a 2-D map to ``size`` = (height, width), float32, clamped ≥ 0."""
    h, w = size
    m = np.asarray(m, dtype=np.float32)
    if m.shape != (h, w):
        m = np.asarray(Image.fromarray(m, mode="F").resize((w, h), Image.BICUBIC), dtype=np.float32)
    return np.maximum(m, 0.0)


def normalized(m: np.ndarray) -> np.ndarray:
    """Scale a 2-D map to 0..1 by its maximum (all-zero stays zero)."""
    m = np.asarray(m, dtype=np.float32)
    peak = float(m.max()) if m.size else 0.0
    return m / peak if peak > 0 else np.zeros_like(m)


def heat(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One word's map as 0..1 heat at ``size`` (height, width)."""
    return normalized(upsample(m, size))


def heat_image(h01: np.ndarray, colormap: str = "inferno") -> np.ndarray:
    return colormaps.apply(h01, colormap)


def overlay(image: np.ndarray, h01: np.ndarray, colormap: str = "inferno", opacity: float = 0.6) -> np.ndarray:
    """Blend the coloured heat over ``image``; each pixel's opacity is ``opacity × heat``.

    Weighting by heat keeps unattended regions showing the image instead of the colormap's
    dark end, so the overlay reads as "where this word looks".
    """
    if image.shape[:2] != h01.shape:
        raise ValueError(f"image {image.shape[:2]} and heat {h01.shape} differ in size")
    alpha = (np.clip(h01, 0.0, 1.0) * float(opacity))[..., None]
    color = colormaps.apply(h01, colormap).astype(np.float32)
    out = image.astype(np.float32) * (1.0 - alpha) + color * alpha
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB uint8 image to (height, width) with a good filter; no-op when equal."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image, "RGB").resize((w, h), Image.LANCZOS))


def outline_region(picture: np.ndarray, region, scale: float) -> np.ndarray:
    """``picture`` (H, W, 3) uint8 with a query region (bridge/regions.py, in the run's image
    pixels, times ``scale``) outlined in white: so that a self-attention map shows what asked."""
    from PIL import ImageDraw

    if region.shape == "mask":  # its edge: mask pixels with a neighbour outside
        h, w = picture.shape[:2]
        mask = np.asarray(Image.fromarray(region.mask_array()).resize((w, h), Image.NEAREST))
        p = np.pad(mask, 1)
        edge = mask & ~(p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:])
        out = picture.copy()
        out[edge] = 255
        return out
    image = Image.fromarray(picture)
    draw = ImageDraw.Draw(image)
    points = [(x * scale, y * scale) for x, y in region.points]
    if region.shape == "box":
        draw.rectangle([*points[0], *points[1]], outline=(255, 255, 255), width=2)
    elif region.shape == "polygon":
        draw.polygon(points, outline=(255, 255, 255))
    else:  # a pixel: a small square around it
        (x, y), r = points[0], 4
        draw.rectangle([x - r, y - r, x + r, y + r], outline=(255, 255, 255), width=2)
    return np.asarray(image)
