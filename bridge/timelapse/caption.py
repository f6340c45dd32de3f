"""The caption panel under a timelapse frame: prompt, step, phase and the word legend."""

from __future__ import annotations

import textwrap
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..phases import PHASE_NAMES
from . import colormaps

BACKGROUND = (16, 16, 20)
TEXT = (235, 235, 235)
DIM = (150, 150, 160)
PHASE_COLORS = {"noise": (120, 120, 130), "structure": (86, 180, 233), "detail": (230, 159, 0)}


@lru_cache(maxsize=8)
def font(size: int) -> ImageFont.ImageFont:
    """Pillow's bundled scalable font: the same look on every machine, no system fonts needed."""
    return ImageFont.load_default(size=size)


def font_size_for(width: int) -> int:
    return int(np.clip(width / 28, 12, 22))


def wrap(text: str, width_px: int, size: int, max_lines: int) -> list[str]:
    """Wrap ``text`` to lines that fit ``width_px``; the last kept line ends with ... if cut."""
    f = font(size)
    chars = max(8, int(width_px / max(f.getlength("n"), 1)))
    lines = textwrap.wrap(text, chars) or [""]
    while chars > 8 and any(f.getlength(line) > width_px for line in lines):
        chars -= 2
        lines = textwrap.wrap(text, chars)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(0, len(lines[-1]) - 1)] + "..."
    return lines


class Caption:
    """Draws the caption for any step; the prompt and legend layout are fixed per run."""

    def __init__(self, width: int, prompt: str, words: list[tuple[int, str]], total: int):
        self.width = width
        self.size = font_size_for(width)
        self.pad = max(4, self.size // 2)
        self.line = int(self.size * 1.3)
        self.prompt_lines = wrap(prompt, width - 2 * self.pad, self.size, max_lines=2)
        self.words = words  # (index in the run's word list, word) of the words shown
        self.total = total
        self.height = self.pad * 2 + self.line * (len(self.prompt_lines) + 2)

    def render(self, step: int, phase: str, phase_weights) -> np.ndarray:
        img = Image.new("RGB", (self.width, self.height), BACKGROUND)
        d = ImageDraw.Draw(img)
        f = font(self.size)
        y = self.pad
        for line in self.prompt_lines:
            d.text((self.pad, y), line, font=f, fill=TEXT)
            y += self.line
        status = f"step {step + 1}/{self.total}  ·  {phase}"
        d.text((self.pad, y), status, font=f, fill=PHASE_COLORS.get(phase, TEXT))
        self._phase_bar(d, y, f.getlength(status) + 2 * self.pad, phase_weights)
        y += self.line
        x = self.pad
        for i, word in self.words:
            d.rectangle([x, y + self.size * 0.3, x + self.size * 0.6, y + self.size * 0.9], fill=colormaps.word_color(i))
            x += self.size * 0.8
            d.text((x, y), word, font=f, fill=DIM)
            x += f.getlength(word) + self.size
            if x > self.width - self.pad:
                break
        return np.asarray(img)

    def _phase_bar(self, d: ImageDraw.ImageDraw, y: int, x0: float, weights) -> None:
        """A thin bar split by the smooth phase weights (noise | structure | detail)."""
        x1 = self.width - self.pad
        if x1 - x0 < 30:
            return
        top, bottom = y + self.size * 0.35, y + self.size * 0.85
        x = x0
        for name, w in zip(PHASE_NAMES, weights):
            nx = x + (x1 - x0) * float(w)
            if nx > x:
                d.rectangle([x, top, nx, bottom], fill=PHASE_COLORS[name])
            x = nx
