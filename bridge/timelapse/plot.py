"""A small line plot drawn with Pillow: axes, ticks, labelled curves and one marker per curve.

Enough for attention-mass curves without a plotting library on the show machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from .caption import font

WHITE = (255, 255, 255)
AXIS = (40, 40, 40)
GRID = (225, 225, 225)
TEXT = (30, 30, 30)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering lo..hi (1, 2 or 5 × a power of ten apart)."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10) if m * mag >= raw), default=10 * mag)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + k * step, 10) for k in range(int((hi - first) / step + 1e-9) + 1)]


def _readable(color) -> tuple[int, int, int]:
    """Darken light colours (white, yellow) so they show on the white background."""
    r, g, b = (int(c) for c in color)
    lum = 0.299 * r + 0.587 * g + 0.114 * b
    k = 150.0 / lum if lum > 150 else 1.0
    return (int(r * k), int(g * k), int(b * k))


@dataclass
class _Curve:
    x: np.ndarray
    y: np.ndarray
    label: str
    color: tuple[int, int, int]
    marker_x: float | None


@dataclass
class LinePlot:
    width: int = 960
    height: int = 540
    title: str = ""
    x_label: str = ""
    y_label: str = ""
    x_max: float | None = None
    curves: list[_Curve] = field(default_factory=list)

    def add(self, x, y, label: str, color, marker_x: float | None = None) -> None:
        """A curve; ``marker_x`` (an x value present in ``x``) gets a ring and a dotted drop line."""
        self.curves.append(_Curve(np.asarray(x, float), np.asarray(y, float), label, _readable(color), marker_x))

    def render(self) -> np.ndarray:
        img = Image.new("RGB", (self.width, self.height), WHITE)
        d = ImageDraw.Draw(img)
        f, small = font(16), font(13)
        legend_w = min(220, self.width // 4)
        left, right, top, bottom = 64, self.width - legend_w - 16, 40, self.height - 48
        title = self.title if len(self.title) <= 90 else self.title[:87] + "..."
        d.text((left, 10), title, font=f, fill=TEXT)

        xs = np.concatenate([c.x for c in self.curves]) if self.curves else np.zeros(1)
        ys = np.concatenate([c.y for c in self.curves]) if self.curves else np.zeros(1)
        x0, x1 = 0.0, float(self.x_max if self.x_max is not None else max(xs.max(), 1.0))
        y0, y1 = 0.0, float(max(ys.max(), 1e-6) * 1.05)

        def px(x, y):
            return (left + (right - left) * (x - x0) / (x1 - x0), bottom - (bottom - top) * (y - y0) / (y1 - y0))

        for t in nice_ticks(y0, y1):
            _, y = px(x0, t)
            d.line([(left, y), (right, y)], fill=GRID)
            d.text((left - 6, y), f"{t:g}", font=small, fill=TEXT, anchor="rm")
        for t in nice_ticks(x0, x1, 8):
            x, _ = px(t, y0)
            d.line([(x, bottom), (x, bottom + 4)], fill=AXIS)
            d.text((x, bottom + 6), f"{t:g}", font=small, fill=TEXT, anchor="mt")
        d.line([(left, top), (left, bottom), (right, bottom)], fill=AXIS, width=1)
        d.text(((left + right) / 2, self.height - 8), self.x_label, font=small, fill=TEXT, anchor="mb")
        d.text((8, top - 22), self.y_label, font=small, fill=TEXT)

        for c in self.curves:
            pts = [px(x, y) for x, y in zip(c.x, c.y)]
            if len(pts) > 1:
                d.line(pts, fill=c.color, width=2)
            elif pts:
                d.ellipse([pts[0][0] - 2, pts[0][1] - 2, pts[0][0] + 2, pts[0][1] + 2], fill=c.color)
            if c.marker_x is not None and c.x.size:
                k = int(np.argmin(np.abs(c.x - c.marker_x)))
                mx, my = pts[k]
                for yy in range(int(my) + 6, int(bottom), 6):
                    d.line([(mx, yy), (mx, min(yy + 3, bottom))], fill=c.color)
                d.ellipse([mx - 5, my - 5, mx + 5, my + 5], outline=c.color, width=2)

        ly = top
        for c in self.curves:
            if ly > bottom - 14:
                d.text((right + 16, ly), "...", font=small, fill=TEXT)
                break
            d.line([(right + 16, ly + 8), (right + 36, ly + 8)], fill=c.color, width=3)
            mark = "" if c.marker_x is None else f"  (stable @ {c.marker_x:g})"
            d.text((right + 42, ly), f"{c.label}{mark}", font=small, fill=TEXT)
            ly += 18
        return np.asarray(img)

    def save(self, path) -> None:
        Image.fromarray(self.render()).save(path)
