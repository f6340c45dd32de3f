"""The mass timeline: each shown word's share of attention across all steps, with a cursor.

Curves are drawn once per run; each frame only adds the cursor and the points up to its step,
so the timeline costs a copy and a few lines per frame.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from . import colormaps
from .caption import BACKGROUND, DIM, font, font_size_for

GRID = (45, 45, 52)


class MassTimeline:
    def __init__(self, width: int, height: int, steps: list[int], total: int,
                 mass: np.ndarray, words: list[tuple[int, str]]):
        """``mass`` is (S, W) for the recorded steps; ``words`` the (index, word) pairs to draw."""
        self.width, self.height = width, height
        self.steps, self.total = list(steps), max(total, 1)
        self.words = words
        self.pad = 6
        self.label = font(max(9, font_size_for(width) - 3))
        self.plot_top = self.pad + self.label.size + 4  # the label sits above the curves
        shown = mass[:, [i for i, _ in words]] if len(words) and mass.size else np.zeros((len(steps), 0))
        # Scale to the shown range: masses of 16 words all sit near 1/16 and would look flat from 0.
        lo, hi = (float(shown.min()), float(shown.max())) if shown.size else (0.0, 1.0)
        margin = max((hi - lo) * 0.08, 1e-4)
        self.lo, self.hi = lo - margin, hi + margin
        self.range_text = f"attention mass  {lo:.3f} to {hi:.3f}"
        self.points = [[self._xy(s, shown[k, j]) for k, s in enumerate(self.steps)] for j in range(shown.shape[1])]
        self.background = self._background()

    def _x(self, step: float) -> float:
        return self.pad + (self.width - 2 * self.pad) * (step / max(self.total - 1, 1))

    def _xy(self, step: int, value: float) -> tuple[float, float]:
        frac = (float(value) - self.lo) / (self.hi - self.lo)
        y = self.height - self.pad - (self.height - self.pad - self.plot_top) * frac
        return (self._x(step), y)

    def _background(self) -> Image.Image:
        img = Image.new("RGB", (self.width, self.height), BACKGROUND)
        d = ImageDraw.Draw(img)
        d.line([(self.pad, self.height - self.pad), (self.width - self.pad, self.height - self.pad)], fill=GRID)
        for j, pts in enumerate(self.points):
            dim = tuple(int(c * 0.35 + BACKGROUND[0] * 0.65) for c in colormaps.word_color(self.words[j][0]))
            if len(pts) > 1:
                d.line(pts, fill=dim, width=1)
        d.text((self.pad, self.pad // 2), self.range_text, font=self.label, fill=DIM)
        return img

    def render(self, upto: int) -> np.ndarray:
        """The timeline with curves bright up to step ``upto`` and a cursor there."""
        img = self.background.copy()
        d = ImageDraw.Draw(img)
        k = sum(1 for s in self.steps if s <= upto)
        for j, pts in enumerate(self.points):
            color = colormaps.word_color(self.words[j][0])
            if k > 1:
                d.line(pts[:k], fill=color, width=2)
            if k >= 1:
                x, y = pts[k - 1]
                d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=color)
        x = self._x(upto)
        d.line([(x, self.plot_top), (x, self.height - self.pad)], fill=DIM, width=1)
        return np.asarray(img)
