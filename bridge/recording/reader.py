"""Read a recording back as the same RunStart / StepFrame / RunEnd records the engine produced.

Only numpy, json and Pillow: no torch, so a show machine without a GPU can replay.
A truncated recording (process killed mid-run) reads up to its last complete step and says so.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from .. import mapkinds
from ..frames import RunEnd, RunStart, StepFrame
from ..phases import PhaseSchedule
from .format import FINAL_IMAGE, FORMAT_NAME, FORMAT_VERSION, MANIFEST, PREVIEWS_DIR, STEPS_INDEX, RecordingError, step_name

log = logging.getLogger(__name__)

# np.load parses each .npy header with ast.literal_eval, and CPython before 3.11.8 can fail two
# ast parses running at once in two threads ("SystemError: AST constructor recursion depth
# mismatch"); replay reads steps on worker threads, so array loads take turns.  The PNG decodes,
# the expensive part, still run in parallel.
_NPY_LOCK = threading.Lock()


def _load_npy(path) -> np.ndarray:
    with _NPY_LOCK:
        return np.load(path)


def load_recording(folder) -> "Recording":
    return Recording(folder)


def recording_with_steps(recording, doing: str, error=RecordingError) -> "Recording":
    """``recording`` (a Recording or a folder) with at least one complete step, for commands
    that turn steps into files; ``error`` names the command's own error, ``doing`` its verb."""
    rec = recording if isinstance(recording, Recording) else load_recording(recording)
    if len(rec) == 0:
        raise error(f"{rec.folder} has no completed steps to {doing}")
    if rec.truncated:
        log.warning("recording %s is truncated: using its %d completed steps of %d", rec.folder, len(rec), rec.start.steps)
    return rec


class Recording:
    def __init__(self, folder):
        self.folder = Path(folder)
        manifest_path = self.folder / MANIFEST
        if not self.folder.is_dir():
            raise RecordingError(f"{self.folder} is not a folder; expected a recording made by `render` or `serve --record`")
        if not manifest_path.is_file():
            raise RecordingError(f"{self.folder} has no {MANIFEST}; it is not a recording")
        try:
            self.manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RecordingError(f"{manifest_path} is unreadable or corrupt ({exc})") from None
        if not isinstance(self.manifest, dict) or self.manifest.get("format") != FORMAT_NAME:
            raise RecordingError(f"{manifest_path} is not an attention-bridge recording manifest")
        version = self.manifest.get("version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise RecordingError(
                f"{self.folder} uses recording format version {version}; this bridge reads up to {FORMAT_VERSION}"
            )
        try:
            self.start = self._run_start()
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordingError(f"{manifest_path} is missing or has a bad field ({exc})") from None
        self.steps = self._read_index()

    # -- what a caller asks -------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.steps)

    @property
    def status(self) -> str:
        return self.manifest.get("status", "running")

    @property
    def truncated(self) -> bool:
        """True when the run did not finish and was not ended cleanly (e.g. the process was killed)."""
        return self.status == "running" or len(self.steps) < int(self.manifest.get("steps_done", 0))

    def map_path(self, kind: str, step: int) -> Path:
        """Where step ``step``'s array of map kind ``kind`` lies."""
        return self.folder / mapkinds.get(kind).folder / step_name(step, "npy")

    def map_array(self, kind: str, i: int) -> np.ndarray:
        """The ``i``-th recorded step's array of map kind ``kind`` (without reading the rest of the step)."""
        step = int(self.steps[i]["step"])
        try:
            return _load_npy(self.map_path(kind, step))
        except (OSError, ValueError) as exc:
            raise RecordingError(f"{self.folder}: step {step} is damaged ({exc})") from None

    def frame(self, i: int) -> StepFrame:
        line = self.steps[i]
        step = int(line["step"])
        try:
            kinds = {name: _load_npy(self.map_path(name, step)) for name in _kinds_of(line)}
            preview = np.asarray(Image.open(self.folder / PREVIEWS_DIR / step_name(step, "png")).convert("RGB"))
        except (OSError, ValueError) as exc:
            raise RecordingError(f"{self.folder}: step {step} is damaged ({exc})") from None
        return StepFrame(
            run_id=self.start.run_id,
            step=step,
            total=int(line["total"]),
            timestep=float(line["timestep"]),
            phase=str(line["phase"]),
            phase_weights=tuple(float(x) for x in line["phase_weights"]),
            words=self.start.words,
            kinds=kinds,
            mass=tuple(float(x) for x in line["mass"]),
            preview=preview,
            elapsed=float(line["elapsed"]),
            timings=dict(line.get("timings", {})),
            regions=tuple(line.get("regions", ())),
            concepts=tuple(str(c) for c in line.get("concepts", ())),
        )

    def frames(self) -> Iterator[StepFrame]:
        for i in range(len(self.steps)):
            yield self.frame(i)

    def final_image(self) -> np.ndarray | None:
        path = self.folder / FINAL_IMAGE
        return np.asarray(Image.open(path).convert("RGB")) if path.is_file() else None

    def daam(self) -> np.ndarray | None:
        """The cumulative DAAM map of the whole run (or of the last complete step), float16 (W, h, w)."""
        return self.summary("cumulative")

    def summary(self, kind: str) -> np.ndarray | None:
        """A kind's last array of the run: its summary file, else the last complete step's array."""
        k = mapkinds.get(kind)
        if k.summary and (self.folder / k.summary).is_file():
            return _load_npy(self.folder / k.summary)
        if self.steps and kind in _kinds_of(self.steps[-1]):
            return self.map_array(kind, len(self.steps) - 1)
        return None

    def run_end(self) -> RunEnd:
        """The end record as it was sent live; a truncated run ends as ``cancelled`` at its last step."""
        elapsed = float(self.steps[-1]["elapsed"]) if self.steps else 0.0
        if self.truncated:
            return RunEnd(self.start.run_id, "cancelled", len(self.steps), elapsed, None, "recording truncated")
        m = self.manifest
        return RunEnd(
            self.start.run_id, m.get("status", "completed"), int(m.get("steps_done", len(self.steps))),
            float(m.get("elapsed", elapsed)), self.final_image(), m.get("error", ""),
        )

    # -- parsing ----------------------------------------------------------------------
    def _run_start(self) -> RunStart:
        m = self.manifest
        return RunStart(
            run_id=str(m["run_id"]),
            prompt=str(m["prompt"]),
            negative_prompt=str(m.get("negative_prompt", "")),
            seed=int(m["seed"]),
            steps=int(m["steps"]),
            guidance=float(m["guidance"]),
            width=int(m["width"]),
            height=int(m["height"]),
            map_size=tuple(int(x) for x in m["map_size"]),
            words=tuple(str(w) for w in m["words"]),
            word_token_indices=tuple(tuple(int(i) for i in ix) for ix in m["word_token_indices"]),
            dropped_words=tuple(str(w) for w in m.get("dropped_words", [])),
            model=str(m.get("model", "")),
            scheduler=str(m.get("scheduler", "")),
            phases=PhaseSchedule.from_dict(m.get("phases", {})),
            extra=dict(m.get("extra", {})),
        )

    def _read_index(self) -> list[dict]:
        path = self.folder / STEPS_INDEX
        if not path.is_file():
            return []
        steps = []
        with open(path, encoding="utf-8", errors="replace") as f:
            for raw in f:
                if not raw.endswith("\n"):
                    break  # a line cut off by a kill: that step never completed
                try:
                    line = json.loads(raw)
                except json.JSONDecodeError:
                    break
                step = int(line.get("step", -1))
                if not all(self.map_path(kind, step).is_file() for kind in _kinds_of(line)):
                    break  # named before its files reached the disk: not a complete step
                steps.append(line)
        return steps


def _kinds_of(line: dict) -> list[str]:
    """The map kinds one index line's step holds that this bridge knows (a newer bridge's
    kinds are skipped); a line without ``kinds`` holds the version-1 kinds."""
    return [k for k in line.get("kinds", mapkinds.V1_KINDS) if k in mapkinds.KINDS]
