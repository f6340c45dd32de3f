"""Every bound a request may carry, in one table read by every door.

The command line (`render`, `serve`), preset files, websocket and OSC controls, the engine's
own checks, the browser viewer and TouchDesigner all take their ranges from :data:`LIMITS`;
the viewer and TouchDesigner get it at run time in the websocket ``hello`` message, and
tests hold their static fallbacks (HTML attributes, TouchDesigner parameter ranges) to it.
Only the standard library is imported, so TouchDesigner can load this file by path.

Why these values:

- seed 0..2³²−1: what numpy and most seed UIs take, exactly representable in JavaScript
  and JSON.  TouchDesigner integer parameters are signed 32-bit, so its Seed parameter can
  only offer 0..2³¹−1 (:func:`int32_range`); every seed it sends is still valid here.
- steps 1..1000: SD-family schedulers are trained on 1000 timesteps, so no model can take
  more; a scheduler may allow fewer (999 with "leading" spacing) and the engine says so.
- width/height 8..2048, multiples of 8: one latent pixel at the usual VAE factor up to the
  largest side SDXL-class models draw sensibly; the engine also checks the model's factor.
- guidance 0..100: beyond ~30 every model saturates; 100 leaves room and catches typos.
- map side 1..1024: a heat map larger than the image it explains helps no one.
- vae_every 0..steps: every step at most.
- replay speed 0.001..1000 (× original timing).
- self-attention regions: 8 at once (each costs its rows' attention per layer), polygons of
  ≤ 64 vertices, masks of ≤ 256 pixels a side (a mask is stretched over the image, and the
  finest self-attention grid of SD at 512² is 64 cells a side).
- concepts: 16 at once, 40 characters each: every concept is a map per step (16 maps of a
  64×64 float16 map are 128 KiB a step); the paper's scenes name a handful.
- prompt ≤ 2000 characters and ≤ 200 words: the CLIP encoder keeps ~75 tokens; far beyond
  that is a mistake.
- self grid 0..64 cells a side: (cells)² float16 per step, 32 MiB at 64 (square), 2 MiB at 32;
  more would outweigh the run's own maps and previews many times over.
- on a CPU, at most 64×64 latent positions (512² for SD, 256² for the built-in model):
  self-attention grows with the square of the positions, and past this one run takes
  minutes (2048² at 1 step ran over 7 minutes).  ``--max-latent`` moves it; a GPU has no
  cap beyond the table's sides.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

INT32_MAX = 2**31 - 1
CPU_LATENT_POSITIONS = 64 * 64  # see above  # TouchDesigner integer parameters and OSC "i" arguments are signed 32-bit


@dataclass(frozen=True)
class Bound:
    """A closed range ``lo..hi``; ``multiple`` > 1 also asks for a multiple of it."""

    lo: float
    hi: float
    multiple: int = 1

    def __contains__(self, value) -> bool:
        return self.lo <= value <= self.hi and (self.multiple == 1 or value % self.multiple == 0)

    def to_dict(self) -> dict:
        out = {"min": self.lo, "max": self.hi}
        if self.multiple > 1:
            out["multiple"] = self.multiple
        return out


@dataclass(frozen=True)
class Limits:
    prompt_chars: int = 2000
    prompt_words: int = 200
    seed: Bound = Bound(0, 2**32 - 1)
    steps: Bound = Bound(1, 1000)
    guidance: Bound = Bound(0.0, 100.0)
    width: Bound = Bound(8, 2048, 8)
    height: Bound = Bound(8, 2048, 8)
    map_size: Bound = Bound(1, 1024)
    vae_every: Bound = Bound(0, 1000)
    speed: Bound = Bound(0.001, 1000.0)
    word: Bound = Bound(0, 9999)  # `select` by index
    regions: int = 8  # self-attention query regions at once
    region_points: int = 64  # vertices of one polygon region
    region_mask_side: int = 256  # pixels on a mask region's longer side (8 KiB of bits)
    self_grid: Bound = Bound(0, 64)  # cells on the long side of the pooled self-attention (0: off)
    concepts: int = 16  # concept maps at once
    concept_chars: int = 40  # characters of one concept

    def to_dict(self) -> dict:
        """The JSON form sent in ``hello`` (docs/PROTOCOL.md)."""
        out = {"prompt": {"max_chars": self.prompt_chars, "max_words": self.prompt_words},
               "regions": {"max": self.regions, "max_points": self.region_points, "max_mask_side": self.region_mask_side},
               "concepts": {"max": self.concepts, "max_chars": self.concept_chars}}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Bound):
                out[f.name] = value.to_dict()
        return out


LIMITS = Limits()


def for_positions(limits: Limits, positions: int, factor: int) -> Limits:
    """``limits`` with the sides cut to the largest square of at most ``positions`` latent
    positions at ``factor`` image pixels per latent pixel (what a device can run)."""
    import math
    from dataclasses import replace

    side = min(int(limits.width.hi), math.isqrt(positions) * factor)
    side -= side % limits.width.multiple
    return replace(limits, width=replace(limits.width, hi=max(side, limits.width.lo)),
                   height=replace(limits.height, hi=max(side, limits.height.lo)))


def int32_range(bound: Bound) -> tuple[int, int]:
    """The part of ``bound`` a signed 32-bit integer (a TouchDesigner Int parameter) can hold."""
    return max(int(bound.lo), -INT32_MAX - 1), min(int(bound.hi), INT32_MAX)
