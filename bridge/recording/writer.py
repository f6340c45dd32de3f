"""Write a run to disk as it happens, so a killed process leaves every completed step readable.

Order per step: the arrays and preview go to temporary names and are renamed into place, then
one line is appended to steps.jsonl and flushed to disk.  The reader trusts only lines of
steps.jsonl, so a step is either fully there or not there at all.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ..frames import RunEnd, RunStart, StepFrame
from .format import (
    CUMULATIVE_DIR,
    DAAM_MAP,
    FINAL_IMAGE,
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST,
    MAPS_DIR,
    PREVIEWS_DIR,
    STEPS_INDEX,
    step_name,
)


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _save_npy(path: Path, array: np.ndarray) -> None:
    _atomic_write(path, lambda f: np.save(f, np.ascontiguousarray(array, dtype=np.float16)))


def _save_png(path: Path, rgb: np.ndarray) -> None:
    _atomic_write(path, lambda f: Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB").save(f, "PNG"))


def manifest_from_start(start: RunStart) -> dict:
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "run_id": start.run_id,
        "prompt": start.prompt,
        "negative_prompt": start.negative_prompt,
        "seed": start.seed,
        "steps": start.steps,
        "guidance": start.guidance,
        "width": start.width,
        "height": start.height,
        "map_size": list(start.map_size),
        "words": list(start.words),
        "word_token_indices": [list(ix) for ix in start.word_token_indices],
        "dropped_words": list(start.dropped_words),
        "model": start.model,
        "scheduler": start.scheduler,
        "phases": start.phases.to_dict(),
        "extra": start.extra,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "status": "running",
        "steps_done": 0,
        "elapsed": 0.0,
        "error": "",
    }


class Recorder:
    """A sink that writes one run into ``folder`` (created; must be empty or absent).

    Use it for one run; ``for_each_run`` below makes a fresh folder per run for live sessions.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self._manifest: dict | None = None
        self._index = None
        self._last_cumulative = None  # becomes daam.npy when the run ends

    def on_run_start(self, start: RunStart) -> None:
        if self.folder.exists() and any(self.folder.iterdir()):
            raise FileExistsError(f"recording folder {self.folder} is not empty; choose another --out")
        for sub in (MAPS_DIR, CUMULATIVE_DIR, PREVIEWS_DIR):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self._manifest = manifest_from_start(start)
        self._write_manifest()
        self._index = open(self.folder / STEPS_INDEX, "a", encoding="utf-8")

    def on_step(self, frame: StepFrame) -> None:
        if self._index is None:
            return
        name = step_name(frame.step, "npy")
        _save_npy(self.folder / MAPS_DIR / name, frame.maps)
        _save_npy(self.folder / CUMULATIVE_DIR / name, frame.cumulative)
        _save_png(self.folder / PREVIEWS_DIR / step_name(frame.step, "png"), frame.preview)
        line = {
            "step": frame.step,
            "total": frame.total,
            "timestep": frame.timestep,
            "phase": frame.phase,
            "phase_weights": list(frame.phase_weights),
            "mass": list(frame.mass),
            "elapsed": frame.elapsed,
            "timings": frame.timings,
        }
        self._index.write(json.dumps(line) + "\n")
        self._index.flush()
        os.fsync(self._index.fileno())
        self._manifest["steps_done"] = frame.step + 1
        self._last_cumulative = frame.cumulative

    def on_run_end(self, end: RunEnd) -> None:
        if self._manifest is None:
            return
        if end.image is not None:
            _save_png(self.folder / FINAL_IMAGE, end.image)
        if self._last_cumulative is not None:
            _save_npy(self.folder / DAAM_MAP, self._last_cumulative)
        self._manifest.update(status=end.status, steps_done=end.steps_done, elapsed=end.elapsed, error=end.error)
        self._write_manifest()
        self.close()

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None

    def _write_manifest(self) -> None:
        data = json.dumps(self._manifest, indent=2, ensure_ascii=False).encode("utf-8")
        _atomic_write(self.folder / MANIFEST, lambda f: f.write(data))


class RecordEveryRun:
    """A sink that records each run into ``root/<run_id>``, for live and installation sessions."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._current: Recorder | None = None

    def on_run_start(self, start: RunStart) -> None:
        self._current = Recorder(self.root / start.run_id)
        self._current.on_run_start(start)

    def on_step(self, frame: StepFrame) -> None:
        if self._current is not None:
            self._current.on_step(frame)

    def on_run_end(self, end: RunEnd) -> None:
        if self._current is not None:
            self._current.on_run_end(end)
            self._current = None

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
