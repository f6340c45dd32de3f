"""Query regions for self-attention maps: "what does this part of the image look at?"

A region is a pixel, a box or a polygon (a contour) in **image pixels** of the run (x to the
right, y down, 0..width and 0..height), or a mask image stretched over the whole image, so
the viewer, TouchDesigner and the command line all speak the image's own coordinates
whatever the model's latent size.  Per attention layer,
:meth:`Region.coverage` gives how much of each cell of that layer's grid the region covers,
normalised to sum to 1: the weights of the query rows whose attention the region's map
averages (a box of a quarter cell counts that cell fully, since it is all the layer sees).

Forms, one per door:

- JSON (websocket ``regions`` control, presets): ``{"box": [x0, y0, x1, y1]}``,
  ``{"pixel": [x, y]}``, ``{"polygon": [[x, y], [x, y], [x, y], …]}``,
  ``{"mask": {"size": [w, h], "bits": "<base64>"}}`` (the mask's w·h pixels row by row, one
  bit each, most significant first: numpy's ``packbits``), each with an optional ``"id"``.
- Text (command line, OSC, presets): ``box:20,20,30,30``, ``pixel:12,40``,
  ``polygon:10,10,30,10,20,30``, ``mask:WxH:<base64>``.  Only the command line reads a mask
  from an image file (:func:`from_mask_file`): no message ever names a file.

Torch-free (numpy): the control parser, the recording and replay read it.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InvalidRequest
from .limits import LIMITS
from .wiretext import quote

SHAPES = ("pixel", "box", "polygon", "mask")
_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_SUPERSAMPLE = 4  # polygon coverage: point samples per cell side


class RegionError(InvalidRequest):
    """A region that cannot be used: one sentence naming what is wrong."""


@dataclass(frozen=True)
class Region:
    shape: str  # "pixel" | "box" | "polygon" | "mask"
    points: tuple[tuple[float, float], ...]  # pixel: (x, y); box: two corners; polygon: ≥ 3 vertices; mask: ((w, h),)
    id: str = ""
    bits: bytes = b""  # mask: its w·h pixels packed one bit each, row by row (numpy.packbits)

    def mask_array(self) -> np.ndarray:
        """A mask region's pixels, (h, w) bool."""
        w, h = (int(v) for v in self.points[0])
        return np.unpackbits(np.frombuffer(self.bits, np.uint8), count=w * h).reshape(h, w).astype(bool)

    def to_dict(self) -> dict:
        if self.shape == "mask":
            return {"id": self.id, "mask": {"size": [int(v) for v in self.points[0]],
                                            "bits": base64.b64encode(self.bits).decode("ascii")}}
        if self.shape == "pixel":
            value: list = list(self.points[0])
        elif self.shape == "box":
            value = [*self.points[0], *self.points[1]]
        else:
            value = [list(p) for p in self.points]
        return {"id": self.id, self.shape: value}

    def check_inside(self, width: int, height: int) -> None:
        """RegionError unless the region lies in a ``width`` × ``height`` image."""
        if self.shape == "mask":  # stretched over the image, whatever its size
            return
        xs, ys = [p[0] for p in self.points], [p[1] for p in self.points]
        if min(xs) < 0 or min(ys) < 0 or max(xs) > width or max(ys) > height:
            raise RegionError(f"region {self.id or self.shape} reaches outside the {width}×{height} image "
                              f"(x 0..{width}, y 0..{height}, in image pixels)")

    def coverage(self, h: int, w: int, image_hw: tuple[int, int]) -> np.ndarray:
        """Weights (h·w,) row-major over a layer's ``h`` × ``w`` grid, summing to 1."""
        height, width = image_hw
        cell_y, cell_x = height / h, width / w
        if self.shape == "pixel":
            x, y = self.points[0]
            weights = np.zeros((h, w))
            weights[min(int(y / cell_y), h - 1), min(int(x / cell_x), w - 1)] = 1.0
        elif self.shape == "box":
            (x0, y0), (x1, y1) = self.points
            weights = np.outer(_overlap(y0, y1, h, cell_y), _overlap(x0, x1, w, cell_x))
            if not weights.any():  # a degenerate box: the cell it sits in
                return Region("pixel", (((x0 + x1) / 2, (y0 + y1) / 2),)).coverage(h, w, image_hw)
        else:
            s = _SUPERSAMPLE
            ys = (np.arange(h * s) + 0.5) * (cell_y / s)
            xs = (np.arange(w * s) + 0.5) * (cell_x / s)
            if self.shape == "mask":  # the mask's pixel under each sample point
                mask = self.mask_array()
                rows = np.minimum((ys * mask.shape[0] / height).astype(int), mask.shape[0] - 1)
                cols = np.minimum((xs * mask.shape[1] / width).astype(int), mask.shape[1] - 1)
                weights = mask[np.ix_(rows, cols)].reshape(h, s, w, s).mean(axis=(1, 3))
                if not weights.any():  # finer than the samples: the cells holding its pixels
                    ys_, xs_ = np.nonzero(mask)
                    weights = np.zeros((h, w))
                    weights[(ys_ * h // mask.shape[0]), (xs_ * w // mask.shape[1])] = 1.0
                weights = weights.reshape(-1)
                return weights / weights.sum()
            inside = _inside(np.array(self.points), *np.meshgrid(xs, ys))
            weights = inside.reshape(h, s, w, s).mean(axis=(1, 3))
            if not weights.any():  # thinner than the samples: its vertices' cells
                weights = sum(Region("pixel", (p,)).coverage(h, w, image_hw).reshape(h, w) for p in self.points)
        weights = weights.reshape(-1)
        return weights / weights.sum()


def _overlap(lo: float, hi: float, n: int, cell: float) -> np.ndarray:
    """Fraction of each of ``n`` cells of size ``cell`` that [lo, hi] covers."""
    edges = np.arange(n + 1) * cell
    return np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0, None) / cell


def _inside(poly: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Even-odd rule: which points (x, y) lie inside the polygon (vertices (n, 2))."""
    inside = np.zeros(x.shape, bool)
    for (x0, y0), (x1, y1) in zip(poly, np.roll(poly, -1, axis=0)):
        if y0 == y1:
            continue
        crosses = (y0 > y) != (y1 > y)
        at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (x < at)
    return inside


# --------------------------------------------------------------------------- parsing


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RegionError(f"{what} must be finite numbers (image pixels), got {quote(value)}")
    return float(value)


def _points(values, shape: str) -> tuple[tuple[float, float], ...]:
    flat = [_number(v, f"a {shape}'s coordinates") for v in values]
    return tuple(zip(flat[0::2], flat[1::2]))


def from_dict(d, index: int = 0) -> Region:
    """A JSON region (``{"box": [x0, y0, x1, y1], "id": "hat"}``) → :class:`Region`."""
    if not isinstance(d, dict):
        raise RegionError(f"a region is an object like {{\"box\": [x0, y0, x1, y1]}}, got {quote(d)}")
    shapes = [s for s in SHAPES if s in d]
    unknown = set(d) - {"id", *SHAPES}
    if unknown or len(shapes) != 1:
        raise RegionError("a region has exactly one of \"pixel\": [x, y], \"box\": [x0, y0, x1, y1], "
                          "\"polygon\": [[x, y], …] or \"mask\": {\"size\": [w, h], \"bits\": base64} "
                          "(and an optional \"id\")")
    shape, value = shapes[0], d[shapes[0]]
    if shape == "mask":
        if not isinstance(value, dict) or set(value) != {"size", "bits"} or not isinstance(value["size"], list) \
                or len(value["size"]) != 2 or not all(type(v) is int for v in value["size"]):
            raise RegionError('a mask is {"size": [w, h], "bits": "<base64 of its w·h bits, row by row>"}')
        return make_mask(*value["size"], value["bits"], d.get("id", f"r{index}"))
    if shape == "polygon":
        if not isinstance(value, list) or not all(isinstance(p, list) and len(p) == 2 for p in value):
            raise RegionError("a polygon is a list of [x, y] points")
        value = [c for p in value for c in p]
    elif not isinstance(value, list):
        raise RegionError(f"a {shape} is a list of numbers, got {quote(value)}")
    return make(shape, _points(value, shape) if len(value) % 2 == 0 else None, d.get("id", f"r{index}"))


def from_text(text: str, index: int = 0) -> Region:
    """``box:20,20,30,30`` / ``pixel:12,40`` / ``polygon:10,10,30,10,20,30`` → :class:`Region`."""
    if not isinstance(text, str):
        raise RegionError(f"a region is text like box:20,20,30,30, got {quote(text)}")
    shape, _, rest = text.strip().partition(":")
    if shape not in SHAPES:
        raise RegionError(f"a region is pixel:X,Y, box:X0,Y0,X1,Y1, polygon:X,Y,X,Y,X,Y (image pixels) "
                          f"or mask:WxH:BASE64, got {quote(text)}")
    if shape == "mask":
        size, _, bits = rest.partition(":")
        w, _, h = size.partition("x")
        if not (w.isdigit() and h.isdigit()):
            raise RegionError(f"a mask region is mask:WxH:BASE64 (its w·h bits, row by row), got {quote(text)}")
        return make_mask(int(w), int(h), bits, f"r{index}")
    try:
        values = [float(v) for v in rest.split(",")]
    except ValueError:
        raise RegionError(f"a region's coordinates are numbers separated by commas, got {quote(text)}") from None
    return make(shape, _points(values, shape) if len(values) % 2 == 0 else None, f"r{index}")


_MASK_TEXT = re.compile(r"mask:\d+x\d+:")


def from_cli_text(text: str, index: int = 0) -> Region:
    """The command line's regions: :func:`from_text`'s forms, plus ``mask:FILE`` (an image file)."""
    if isinstance(text, str) and text.strip().startswith("mask:") and not _MASK_TEXT.match(text.strip()):
        return from_mask_file(text.strip()[len("mask:"):], index)
    return from_text(text, index)


def make_mask(w: int, h: int, bits, region_id: str) -> Region:
    """A mask region from its size and base64 bits (what JSON and text carry)."""
    side = LIMITS.region_mask_side
    if not (1 <= w <= side and 1 <= h <= side):
        raise RegionError(f"a mask is 1 to {side} pixels on each side (scale it down: it is stretched over the "
                          f"image), got {w}×{h}")
    if not isinstance(bits, str):
        raise RegionError("a mask's bits are base64 text")
    try:
        raw = base64.b64decode(bits, validate=True)
    except (binascii.Error, ValueError):
        raise RegionError("a mask's bits are not valid base64") from None
    if len(raw) != (w * h + 7) // 8:
        raise RegionError(f"a {w}×{h} mask has {(w * h + 7) // 8} bytes of bits, got {len(raw)}")
    region = make("mask", ((float(w), float(h)),), region_id)
    region = Region("mask", region.points, region.id, raw)
    if not region.mask_array().any():
        raise RegionError(f"mask region {region.id} is empty: set at least one pixel")
    return region


def from_mask_file(path, index: int = 0, region_id: str | None = None) -> Region:
    """A mask region from an image file (the command line only): pixels brighter than half are
    in; an image with transparency uses its alpha instead.  Larger masks are scaled down."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(Path(path)) as im:
            im.load()
            gray = im.getchannel("A") if "A" in im.getbands() else im.convert("L")
    except (OSError, UnidentifiedImageError) as exc:
        raise RegionError(f"cannot read the mask image {path}: {exc.strerror or exc}") from None
    side = LIMITS.region_mask_side
    if max(gray.size) > side:
        scale = side / max(gray.size)
        gray = gray.resize((max(1, round(gray.width * scale)), max(1, round(gray.height * scale))), Image.BILINEAR)
    mask = np.asarray(gray) > 127
    bits = base64.b64encode(np.packbits(mask.reshape(-1)).tobytes()).decode("ascii")
    return make_mask(mask.shape[1], mask.shape[0], bits, region_id or f"r{index}")


def make(shape: str, points, region_id: str) -> Region:
    need = {"pixel": (1, 1), "box": (2, 2), "polygon": (3, LIMITS.region_points), "mask": (1, 1)}[shape]
    if points is None or not need[0] <= len(points) <= need[1]:
        counts = {"pixel": "2 numbers (x, y)", "box": "4 numbers (x0, y0, x1, y1)",
                  "polygon": f"3 to {LIMITS.region_points} points"}
        raise RegionError(f"a {shape} region takes {counts[shape]}")
    if not isinstance(region_id, str) or not _ID.fullmatch(region_id):
        raise RegionError(f"a region id is 1 to 32 letters, digits, '-' or '_', got {quote(region_id)}")
    if any(not (0 <= c <= LIMITS.width.hi) for p in points for c in p):
        raise RegionError(f"region coordinates are image pixels within 0..{LIMITS.width.hi:g}")
    if shape == "box":
        (x0, y0), (x1, y1) = points
        points = ((min(x0, x1), min(y0, y1)), (max(x0, x1), max(y0, y1)))
    return Region(shape, points, region_id)


def parse_list(values, parse) -> tuple[Region, ...]:
    """Several regions (JSON objects with :func:`from_dict`, text with :func:`from_text`); ids unique."""
    if not isinstance(values, (list, tuple)):
        raise RegionError("regions is a list (empty: no self-attention maps)")
    if len(values) > LIMITS.regions:
        raise RegionError(f"at most {LIMITS.regions} regions at once, got {len(values)}")
    regions = tuple(parse(v, i) for i, v in enumerate(values))
    ids = [r.id for r in regions]
    if len(set(ids)) != len(ids):
        raise RegionError(f"region ids must differ, got {', '.join(ids)}")
    return regions
