"""The particles layout: the particle force law (docs/PARTICLES.md) rendered offline.

Drives :mod:`bridge.particles` — the reference implementation the browser viewer and
TouchDesigner are tested against — with one word's cumulative attention and the frame's phase
weights, exactly as those hosts do, so a timelapse of the morph needs no TouchDesigner.

Hosts run 60 updates per second while the model makes a few steps per second; here each
recorded step becomes ``frames_per_step`` video frames of ``60 / fps`` updates each, so the
video plays the simulation in real time.  Particles are splatted at half the tile size (one
particle per pixel once settled) and scaled up ×2, which reads better than sparse dots.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .. import particles as law
from ..frames import RunStart, StepFrame
from .style import Style, frame_maps, label


class Particles:
    def __init__(self, start: RunStart, style: Style, particles: int = 0, frames_per_step: int = 3,
                 fps: float = 8.0, seed: int = 0):
        self.style = style
        th, tw = style.tile
        self.grid = (max(1, th // 2), max(1, tw // 2))
        count = particles or self.grid[0] * self.grid[1]
        self.params = law.ParticleParams(count=count)
        self.state = law.init_particles(count, seed=seed, scatter=True)
        self.frames_per_step = max(1, int(frames_per_step))
        self.updates_per_frame = max(1, round(1.0 / (self.params.dt * fps)))
        self.word_index, self.word = style.words[0]

    def render(self, frame: StepFrame) -> np.ndarray:
        return self.sequence(frame)[-1]

    def sequence(self, frame: StepFrame) -> list[np.ndarray]:
        """The video frames for one recorded step (advances the simulation)."""
        maps = frame_maps(frame, self.style.map_kind, self.style.region_ids, self.style)
        attention = law.word_attention(maps, self.word_index)
        w = law.phase_weight(frame.phase_weights, self.params.phase_gain)
        colors = law.particle_colors(frame.preview, self.state.home)
        out = []
        for _ in range(self.frames_per_step):
            self.state = law.advance(self.state, attention, w, self.params, self.updates_per_frame)
            out.append(self._draw(colors))
        return out

    def _draw(self, colors: np.ndarray) -> np.ndarray:
        gh, gw = self.grid
        small = law.render(self.state.pos, colors, gw, gh)
        th, tw = self.style.tile
        big = np.asarray(Image.fromarray(small).resize((tw, th), Image.NEAREST))
        return label(big, self.word)
