"""Record every run of a live session, each into ``root/<run_id>``, unattended for weeks.

Each run gets its own :class:`~bridge.recording.writer.Recorder`, writing on its own thread.
Around them this sink keeps the promises an installation needs (docs/RECORDING.md):

- A run's end does not wait for its recording: the next run starts at once.
- Retention: once a run's recording is complete, on that recorder's thread, the oldest runs
  beyond the policy are deleted (:mod:`bridge.recording.retention`); never a run being
  written, never the newest one, never one a reader holds.
- A failing disk (full, read-only) *suspends* recording: one log line, the live stream goes on,
  the failed run keeps the steps it wrote.  Every later run tries again — its recorder writes
  the manifest first and gives the folder back when no step lands — so recording resumes by
  itself, with one log line, once writes work again, and the leftovers of failed runs are
  tidied then.  While suspended, each run not recorded logs one line.
- A disk that hangs holds one stuck writer and its queue, not one more per run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
from pathlib import Path

from ..frames import RunEnd, RunStart, StepFrame
from .format import MANIFEST
from .retention import Retention, prune
from .writer import Recorder, fault_words

log = logging.getLogger(__name__)


class RecordEveryRun:
    """A sink that records each run into ``root/<run_id>``, pruned by ``retention``.

    ``close`` waits for every recording still being written (and its pruning).
    """

    def __init__(self, root: str | os.PathLike, retention: Retention | None = None):
        self.root = Path(root)
        self.retention = retention or Retention()
        self._current: Recorder | None = None
        self.recorders: list[Recorder] = []  # recorders still writing
        self.failed = 0  # runs whose recording is incomplete or was skipped
        self.error = ""  # the latest reason
        self.suspended = ""  # why recording is suspended ("" while it works)
        self.not_recorded = 0  # runs lost while suspended, since the last resume
        self._dirty: set[Path] = set()  # folders of failed runs, tidied once writes work again
        self._lock = threading.Lock()  # the fields above; held briefly, never while pruning
        self._pruning = threading.Lock()  # one prune at a time

    @property
    def ok(self) -> bool:
        self._collect()
        return self.failed == 0 and all(r.ok for r in self.recorders)

    def status(self) -> dict:
        """The recorder's state for an operator (the websocket ``status`` message's ``recording``)."""
        with self._lock:
            return {"state": "suspended" if self.suspended else "recording", "folder": str(self.root),
                    "error": self.suspended, "failed": self.failed}

    # -- sink (the generation thread) -----------------------------------------------------
    def on_run_start(self, start: RunStart) -> None:
        self._collect()
        with self._lock:
            stuck = next((r for r in self.recorders if r.behind), None)
            if stuck is not None:  # a hung disk: one stuck writer, not one more per run
                self._current = None
                self.failed += 1
                self.error = f"run {start.run_id} was not recorded: the disk is still stuck on {stuck.folder}"
                log.error("%s", self.error)
                return
            # Registered before its folder exists, so a prune on another thread protects it.
            self._current = Recorder(self.root / start.run_id, wait_at_end=False, report=False, notify=self._heard)
            self.recorders.append(self._current)
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
            self._current = None
        for r in list(self.recorders):
            r.wait()
        self._collect()

    # -- internals ------------------------------------------------------------------------
    def _collect(self) -> None:
        """Forget finished recorders, counting the failed ones."""
        with self._lock:
            for r in [r for r in self.recorders if not r.writing]:
                self.recorders.remove(r)
                if not r.ok:
                    self.failed, self.error = self.failed + 1, r.error

    def _heard(self, rec: Recorder, event: str) -> None:
        """A recorder's news (its writer thread; a drop comes from the generation thread)."""
        if event == "failed":
            self._failed(rec)
        elif event == "writing":
            self._writing(rec)
        elif event == "done":
            self._prune(rec)

    def _failed(self, rec: Recorder) -> None:
        with self._lock:
            if rec.disk_error is None:  # the disk fell behind (or hung): the run ends early on disk
                log.error("recording %s is incomplete: %s", rec.folder, rec.error)
                return
            self._dirty.add(rec.folder)
            if self.suspended:
                self.not_recorded += 1
                log.warning("run %s not recorded: recording is suspended (%s)", rec.folder.name, self.suspended)
                return
            self.suspended = fault_words(rec.disk_error)
            log.error("recording suspended: run %s: %s; the live stream goes on, recording resumes by itself "
                      "once writes to %s work again", rec.folder.name, rec.error, self.root)

    def _writing(self, rec: Recorder) -> None:
        with self._lock:
            if not self.suspended:
                return
            log.info("recording resumed: writes to %s work again (%d run(s) were not recorded while suspended)",
                     self.root, self.not_recorded)
            self.suspended, self.not_recorded = "", 0
            dirty, self._dirty = self._dirty, set()
        for folder in dirty - {rec.folder}:
            _tidy(folder)

    def _prune(self, rec: Recorder) -> None:
        if self.retention.unlimited:
            return
        with self._lock:  # every run still (or about to be) written, and this one: the newest is kept
            protect = [r.folder for r in self.recorders if not r.finished] + [rec.folder]
        with self._pruning:
            prune(self.root, self.retention, protect=protect)  # logs what it deleted


def _tidy(folder: Path) -> None:
    """What a failed write left in ``folder``: temporary files, or a folder that is no recording."""
    if not (folder / MANIFEST).is_file():
        shutil.rmtree(folder, ignore_errors=True)
        return
    for tmp in folder.rglob("*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()
