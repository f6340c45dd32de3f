"""Render a recording into a timelapse video: layout on top, caption, then mass timeline."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import mapkinds
from ..errors import UserError
from ..frames import RunStart
from ..recording import Recording, recording_with_steps
from ..wordpick import focus_index, is_content
from . import colormaps
from .caption import Caption
from .layouts import LAYOUTS, Style, make_layout, tile_size
from .style import step_labels
from .timeline import MassTimeline
from .writers import UnsupportedFormat, open_writer

log = logging.getLogger(__name__)



def map_kinds() -> tuple[str, ...]:
    """The `--map` names of the map kinds (bridge/mapkinds.py), read when asked so new kinds
    show: word kinds pick maps by word, ``self`` by query region, ``concepts`` by concept."""
    return tuple(k.cli_name for k in mapkinds.kinds() if k.labels in ("words", "regions", "concepts"))


class TimelapseError(UserError):
    """A timelapse option that cannot work with this recording."""


@dataclass(frozen=True)
class TimelapseOptions:
    layout: str = "particles"  # what the product shows best: the image condensing out of noise
    words: tuple[str, ...] = ()  # empty: a default per layout (see choose_words)
    colormap: str = "inferno"
    opacity: float = 0.6
    map_kind: str = "auto"  # auto: "step" for overlays, "cumulative" for particles (as the viewer)
    size: int = 384  # pixels on the long side of one image tile
    fps: float = 8.0
    hold: float | None = None  # seconds the final image stays on screen (None: the layout's, 1 s; particles 4 s)
    caption: bool = True
    timeline: bool = True
    timeline_height: int = 72
    particles: int = 0  # particles layout: how many (0: one per pixel of a half-size tile)
    frames_per_step: int = 6  # particles layout: video frames per recorded step (enough for the morph to follow)
    regions: tuple = ()  # regions chosen now (bridge.regions.Region), drawn from the run's self grid (--self-grid)

    def check(self) -> None:
        if self.layout not in LAYOUTS:
            raise TimelapseError(f"unknown layout {self.layout!r}; choose one of {', '.join(LAYOUTS)}")
        if self.colormap not in colormaps.COLORMAPS:
            raise TimelapseError(f"unknown colormap {self.colormap!r}; choose one of {', '.join(colormaps.COLORMAPS)}")
        if self.map_kind not in map_kinds() + ("auto",):
            raise TimelapseError(f"unknown map kind {self.map_kind!r}; choose one of {', '.join(map_kinds())}")
        if not 0.0 <= self.opacity <= 1.0:
            raise TimelapseError(f"opacity must be within 0..1, got {self.opacity}")
        if not 16 <= self.size <= 4096:
            raise TimelapseError(f"size must be 16..4096 pixels, got {self.size}")
        if not 0.1 <= self.fps <= 120:
            raise TimelapseError(f"fps must be within 0.1..120, got {self.fps}")
        if self.hold is not None and self.hold < 0:
            raise TimelapseError(f"hold must be ≥ 0 seconds, got {self.hold}")
        if self.particles < 0 or self.particles > 1_000_000:
            raise TimelapseError(f"particles must be 0 (automatic) .. 1000000, got {self.particles}")
        if not 1 <= self.frames_per_step <= 60:
            raise TimelapseError(f"frames per step must be 1..60, got {self.frames_per_step}")

    @property
    def resolved_hold(self) -> float:
        return LAYOUTS[self.layout].hold if self.hold is None else self.hold

    @property
    def resolved_map_kind(self) -> str:
        return self.map_kind if self.map_kind != "auto" else LAYOUTS[self.layout].map_kind


def choose_words(start: RunStart, requested: tuple[str, ...], layout: str, mass: np.ndarray) -> tuple[tuple[int, str], ...]:
    """The (index, word) pairs to show.

    Requested words match the run's words case-insensitively (first occurrence), or are a
    0-based index.  With none requested: the run's focus word (bridge/wordpick.py, the word
    the viewer and TouchDesigner start on) for single and particles; for side, the focus word
    and the other content word with the most attention (summed mass over the steps); up to 16
    words in prompt order for grid.
    """
    words = start.words
    if not words:
        raise TimelapseError("the recording has no words to show")
    if requested:
        chosen = []
        lower = [w.lower() for w in words]
        for r in requested:
            if r.isdigit():
                if int(r) >= len(words):
                    raise TimelapseError(f"word index {r} is out of range: this run has {len(words)} words "
                                         f"(0..{len(words) - 1}: {' '.join(words)})")
                chosen.append((int(r), words[int(r)]))
            elif r.lower() in lower:
                i = lower.index(r.lower())
                chosen.append((i, words[i]))
            else:
                raise TimelapseError(f"word {r!r} is not in this run; its words are: {' '.join(words)}")
        return tuple(dict.fromkeys(chosen))
    default = LAYOUTS[layout].words
    focus = focus_index(words)
    if default == "focus":
        return ((focus, words[focus]),)
    strength = mass.sum(axis=0) if mass.size else np.zeros(len(words))
    order = [int(i) for i in np.argsort(-strength, kind="stable")]
    # Stop words and punctuation soak up attention but are rarely what a viewer wants to see.
    order = [i for i in order if is_content(words[i])] or order
    if default == "strongest":
        return ((order[0], words[order[0]]),)
    if default == "focus and strongest":
        other = [i for i in order if i != focus][:1]
        return tuple((i, words[i]) for i in sorted({focus, *other}))
    return tuple((i, w) for i, w in enumerate(words[:16]))


MISSING_LABELS = {
    "regions": ("region", "this recording has no self-attention maps; record one with --region (render) or the regions control (live)"),
    "concepts": ("concept", "this recording has no concept maps; record some with --concepts (render) or the concepts control (live)"),
}


def choose_regions(rec: Recording, requested: tuple[str, ...], layout: str, labels: str = "regions"):
    """(every region id — or concept — of the run, the (index, id) pairs to show): requested ids
    or 0-based indices; by default every one for grid (up to 16), else the first."""
    what, missing = MISSING_LABELS[labels]
    ids = tuple(dict.fromkeys(i for line in rec.steps for i in step_labels(labels, line.get("regions"), line.get("concepts"))))
    if not ids:
        raise TimelapseError(missing)
    if requested:
        chosen = []
        for r in requested:
            if r.isdigit() and int(r) < len(ids):
                chosen.append((int(r), ids[int(r)]))
            elif r in ids:
                chosen.append((ids.index(r), r))
            else:
                raise TimelapseError(f"{what} {r!r} is not in this run; its {what}s are: {' '.join(ids)}")
        return ids, tuple(dict.fromkeys(chosen))
    if LAYOUTS[layout].words == "focus" or layout != "grid":
        return ids, ((0, ids[0]),)
    return ids, tuple(enumerate(ids[:16]))


def render_timelapse(recording: str | Path | Recording, out: str | Path, options: TimelapseOptions = TimelapseOptions(),
                     progress: bool = True) -> dict:
    """Write the video; returns a summary (frames, size, steps, seconds, truncated)."""
    options.check()
    rec = recording_with_steps(recording, "render", TimelapseError)
    mass = np.array([line["mass"] for line in rec.steps], dtype=np.float64)
    region_ids: tuple[str, ...] = ()
    if options.regions:
        if not any("selfgrid" in line.get("kinds", ()) for line in rec.steps):
            raise TimelapseError("this recording has no self grid to choose regions from after the run; record it "
                                 "with render --self-grid 16 (or the self_grid preset key)")
        region_ids = tuple(r.id for r in options.regions)
        words = tuple(enumerate(region_ids[:16])) if options.layout == "grid" else ((0, region_ids[0]),)
    elif mapkinds.by_cli_name(options.resolved_map_kind).labels in MISSING_LABELS:
        labels = mapkinds.by_cli_name(options.resolved_map_kind).labels
        region_ids, words = choose_regions(rec, options.words, options.layout, labels)
    else:
        words = choose_words(rec.start, options.words, options.layout, mass)
    style = Style(tile_size(rec.start, options.size), words, options.colormap, options.opacity, options.resolved_map_kind,
                  region_ids, options.regions, (rec.start.height, rec.start.width))
    extra = {name: getattr(options, name) for name in LAYOUTS[options.layout].options}
    layout = make_layout(options.layout, rec.start, style, **extra)
    per_step = getattr(layout, "frames_per_step", 1)  # animated layouts give several frames per step

    final = rec.final_image() if not rec.truncated else None
    hold_frames = round(options.resolved_hold * options.fps)
    total_frames = len(rec) * per_step + hold_frames
    t0 = time.perf_counter()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    try:
        writer = open_writer(out, options.fps)
    except UnsupportedFormat as exc:
        raise TimelapseError(str(exc)) from None
    composer = None
    shape = None
    try:
        with tqdm(total=total_frames, unit="frame", desc="timelapse", disable=not progress) as bar:
            frame = None
            for frame in rec.frames():
                for body in _bodies(layout, frame):
                    composer = composer or _Composer(body.shape[1], rec, words, options, mass)
                    image = composer.compose(body, frame)
                    shape = image.shape
                    writer.append(image)
                    bar.update()
            if hold_frames and frame is not None:
                # The final image (when the run finished) stays on screen; animated layouts keep moving.
                last = dataclasses.replace(frame, preview=final) if final is not None else frame
                held = 0
                while held < hold_frames:
                    bodies = _bodies(layout, last) if per_step > 1 else [layout.render(last)] * hold_frames
                    for body in bodies[: hold_frames - held]:
                        writer.append(composer.compose(body, last))
                        held += 1
                        bar.update()
    finally:
        writer.close()
    seconds = time.perf_counter() - t0
    return {
        "path": str(out), "frames": total_frames, "steps": len(rec), "size": (shape[1], shape[0]) if shape else None,
        "seconds": seconds, "fps_rendered": total_frames / seconds if seconds > 0 else float("inf"),
        "truncated": rec.truncated, "words": [w for _, w in words],
    }


def _bodies(layout, frame) -> list:
    sequence = getattr(layout, "sequence", None)
    return sequence(frame) if sequence is not None else [layout.render(frame)]


class _Composer:
    """Stacks layout, caption and timeline; built from the first rendered frame's width."""

    def __init__(self, width: int, rec: Recording, words, options: TimelapseOptions, mass: np.ndarray):
        self.caption = Caption(width, rec.start.prompt, list(words), rec.start.steps) if options.caption else None
        steps = [int(line["step"]) for line in rec.steps]
        self.timeline = (
            MassTimeline(width, options.timeline_height, steps, rec.start.steps, mass, list(words))
            if options.timeline else None
        )

    def compose(self, body: np.ndarray, frame) -> np.ndarray:
        parts = [body]
        if self.caption is not None:
            parts.append(self.caption.render(frame.step, frame.phase, frame.phase_weights))
        if self.timeline is not None:
            parts.append(self.timeline.render(frame.step))
        return np.concatenate(parts, axis=0)
