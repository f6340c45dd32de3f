"""Timelapse videos of recorded runs: heat-map overlays, caption, mass timeline; MP4 or GIF.

Imports numpy, Pillow, tqdm and (for MP4) imageio only: renders on a machine without torch.
"""

from .layouts import LAYOUTS
from .render import TimelapseError, TimelapseOptions, choose_words, map_kinds, render_timelapse

__all__ = ["LAYOUTS", "TimelapseError", "TimelapseOptions", "choose_words", "map_kinds", "render_timelapse"]
