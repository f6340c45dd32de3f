"""Write a run to disk as it happens, so a killed process leaves every completed step readable.

Order per step: every map kind's array and the preview go to temporary names and are renamed
into place, then one line is appended to steps.jsonl and flushed to disk.  The reader trusts
only lines of steps.jsonl whose files exist, so a step is either fully there or not at all.

The disk work runs on the recorder's own thread, fed by a bounded queue, so the sinks after
the recorder (the websocket clients) never wait for the disk.  When the queue stays full for
``block_s`` (the disk is slower than the model, or hung) the step is dropped, and with it the
rest of the run: a recording is always a prefix of the run, never one with holes.  Drops and
write errors are logged, counted (``dropped``) and kept (``error``); ``ok`` says whether the
recording is whole.  A write that fails (disk full, read-only) stops that run's recording
cleanly: no temporary file stays behind, and a run with no step on disk leaves no folder.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import queue
import shutil
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .. import mapkinds
from ..frames import RunEnd, RunStart, StepFrame
from .format import FINAL_IMAGE, FORMAT_NAME, FORMAT_VERSION, MANIFEST, PREVIEWS_DIR, STEPS_INDEX, step_name
from .retention import take_hold

log = logging.getLogger(__name__)

QUEUE_STEPS = 32  # steps that may wait for the disk: ~1.5 s of a 512² run, ~100 MB at 1024²
BLOCK_S = 0.5  # longest a full queue holds the generation thread before the step is dropped
FLUSH_S = 60.0  # longest the end of a run waits for the writer to finish


# The writer's doors to the disk: every file it writes is opened by _open, every folder made by
# _mkdir, everything it takes back removed by _remove.  The disk-fault tests replace these
# three to make the disk full or read-only.
def _open(path: Path, mode: str, **kw):
    return open(path, mode, **kw)


def _mkdir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


_DISK_FAULTS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the disk is read-only",
    errno.EACCES: "writing is not permitted",
    errno.EPERM: "writing is not permitted",
    errno.EIO: "the disk reported an I/O error",
}


def fault_words(exc: BaseException) -> str:
    """What a write error means for an operator: "the disk is full"."""
    return _DISK_FAULTS.get(getattr(exc, "errno", None)) or f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"


def describe_error(exc: BaseException) -> str:
    """A write error in one sentence: "the disk is full ([Errno 28] No space left on device: 'path')"."""
    words = _DISK_FAULTS.get(getattr(exc, "errno", None))
    return f"{words} ({exc})" if words else f"{type(exc).__name__}: {exc}"


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with _open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # a full disk still unlinks; a read-only one is tidied on recovery
            _remove(tmp)
        raise


# An array is encoded in memory and handed to the file's write(): np.save writes a real file
# through its descriptor and reports a full disk without its errno ("28672 requested and 18368
# written"), which could not be told from any other failure.  (Pillow's PNG goes through write().)
def _save_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    _atomic_write(path, lambda f: f.write(buf.getbuffer()))


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


def index_line(frame: StepFrame, kinds: list[str]) -> dict:
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
    if set(kinds) != set(mapkinds.V1_KINDS):  # version-1 lines without "kinds" hold exactly those
        line["kinds"] = kinds
    if frame.regions:  # what labels the "self" maps of this step
        line["regions"] = list(frame.regions)
    if frame.concepts:  # what labels the "concepts" maps of this step
        line["concepts"] = list(frame.concepts)
    return line


class _RunWriter:
    """The disk side of one recording; every method runs on the recorder's thread."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.created = not folder.exists()  # so a run that wrote nothing gives the folder back
        self.manifest: dict | None = None
        self.index = None
        self.index_size = 0  # bytes of complete lines in steps.jsonl
        self.folders: set[str] = set()
        self.last: dict[str, np.ndarray] = {}  # per kind with a summary file: the last step's array
        self.hold = None

    def start(self, start: RunStart) -> None:
        _mkdir(self.folder)
        self.hold = take_hold(self.folder)  # before the manifest: no prune may take a run being written
        self.manifest = manifest_from_start(start)
        self.write_manifest()  # first: a folder holding anything of a run is a readable recording
        _mkdir(self.folder / PREVIEWS_DIR)
        self.index = _open(self.folder / STEPS_INDEX, "ab", buffering=0)  # unbuffered: nothing left to fail at close

    def step(self, frame: StepFrame) -> None:
        written = []
        for kind in mapkinds.kinds():  # the table's order: the same files in the same order every step
            array = frame.kinds.get(kind.name)
            if array is None:
                continue
            if kind.folder not in self.folders:
                _mkdir(self.folder / kind.folder)
                self.folders.add(kind.folder)
            _save_npy(self.folder / kind.folder / step_name(frame.step, "npy"), mapkinds.as_stored(kind, array))
            written.append(kind.name)
            if kind.summary:
                self.last[kind.name] = array
        _save_png(self.folder / PREVIEWS_DIR / step_name(frame.step, "png"), frame.preview)
        # Only now, with every file of the step in place, may the index name it.
        line = (json.dumps(index_line(frame, written)) + "\n").encode("utf-8")
        try:
            view = memoryview(line)
            while view:
                view = view[self.index.write(view):]
            os.fsync(self.index.fileno())
        except BaseException:
            with contextlib.suppress(OSError):  # no half line at the end (the reader skips one anyway)
                os.ftruncate(self.index.fileno(), self.index_size)
            raise
        self.index_size += len(line)
        self.manifest["steps_done"] = frame.step + 1

    def end(self, end: RunEnd) -> None:
        if end.image is not None:
            _save_png(self.folder / FINAL_IMAGE, end.image)
        for name, array in self.last.items():
            _save_npy(self.folder / mapkinds.get(name).summary, mapkinds.as_stored(name, array))
        self.manifest.update(status=end.status, steps_done=end.steps_done, elapsed=end.elapsed, error=end.error)
        self.write_manifest()

    def close(self) -> None:
        if self.index is not None:
            with contextlib.suppress(OSError):
                self.index.close()
            self.index = None
        if self.hold is not None:
            self.hold.close()
            self.hold = None

    @property
    def steps_on_disk(self) -> int:
        return self.manifest["steps_done"] if self.manifest else 0

    def discard(self) -> None:
        """Remove what a run that got no step to the disk wrote (best effort: the disk is failing)."""
        self.close()
        with contextlib.suppress(OSError):  # what stays (a read-only disk) is tidied on recovery
            for path in [self.folder] if self.created else list(self.folder.iterdir()):
                _remove(path)

    def write_manifest(self) -> None:
        data = json.dumps(self.manifest, indent=2, ensure_ascii=False).encode("utf-8")
        _atomic_write(self.folder / MANIFEST, lambda f: f.write(data))


class Recorder:
    """A sink that writes one run into ``folder`` (created; must be empty or absent).

    The sink methods only queue; a writer thread does the disk work in order.  ``on_run_end``
    (and ``close``) wait for that thread to finish, up to ``flush_s``, unless ``wait_at_end``
    is False.  Afterwards ``ok`` tells whether every step reached the disk, ``error`` why not.
    Use it for one run; :class:`~bridge.recording.every_run.RecordEveryRun` makes a fresh
    folder per run for live sessions.

    ``notify(recorder, event)``, if given, hears ``"writing"`` (the first step, or an end, is on
    disk), ``"failed"`` (``error`` is set) and ``"done"`` (the writer thread is finishing), on
    the writer thread except a ``"failed"`` for dropped steps.  With ``report=False`` the
    recorder logs nothing itself: the listener decides what the operator reads.
    """

    def __init__(self, folder: str | os.PathLike, *, queue_steps: int | None = None, block_s: float | None = None,
                 flush_s: float | None = None, wait_at_end: bool = True, report: bool = True, notify=None):
        self.folder = Path(folder)
        queue_steps = QUEUE_STEPS if queue_steps is None else queue_steps
        self.block_s = BLOCK_S if block_s is None else block_s
        self.flush_s = FLUSH_S if flush_s is None else flush_s
        self.wait_at_end = wait_at_end
        self.dropped = 0  # steps that never reached the disk because the queue was full
        self.disk_error: OSError | None = None  # the write error that stopped the recording, if any
        self.report, self.notify = report, notify
        self._error = ""
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_steps))
        self._thread: threading.Thread | None = None
        self._shedding = False  # once a step is dropped, so is the rest of the run
        self._ended = False
        self._abandoned = False  # the run's end never made it into the queue

    # -- state a caller reads -------------------------------------------------------------
    @property
    def error(self) -> str:
        """Why the recording is incomplete (a write error, or dropped steps); "" when whole."""
        return self._error

    @property
    def ok(self) -> bool:
        return not self._error

    @property
    def writing(self) -> bool:
        """True while the writer thread still has work."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def finished(self) -> bool:
        """True once the writer thread has ended (False before it starts)."""
        return self._thread is not None and not self._thread.is_alive()

    @property
    def behind(self) -> bool:
        """True while the disk holds the writer up: steps were dropped, or the end was not queued."""
        return (self._shedding or self._abandoned) and self.writing

    # -- sink -----------------------------------------------------------------------------
    def on_run_start(self, start: RunStart) -> None:
        if self._thread is not None:
            raise RuntimeError("a Recorder records one run; use RecordEveryRun for more")
        if self.folder.exists() and any(self.folder.iterdir()):
            raise FileExistsError(f"recording folder {self.folder} is not empty; choose another --out")
        self._thread = threading.Thread(target=self._write_loop, args=(_RunWriter(self.folder),),
                                        name=f"recorder {self.folder.name}", daemon=True)
        self._thread.start()
        self._queue.put(("start", start))  # the queue is empty: never blocks

    def on_step(self, frame: StepFrame) -> None:
        if self._thread is None or self._ended:
            return
        if not self._shedding:
            try:
                self._queue.put(("step", frame), timeout=self.block_s)
                return
            except queue.Full:
                self._shedding = True
                self._fail(f"the disk fell {self._queue.maxsize} steps behind; dropped step {frame.step} "
                           f"and the rest of the run (the recording ends at step {frame.step - 1})")
        self.dropped += 1

    def on_run_end(self, end: RunEnd) -> None:
        if self._thread is None or self._ended:
            return
        if self._finish(("end", end)) and self.wait_at_end:
            self.wait()

    def close(self) -> None:
        """Finish writing and wait for it (a run without an end stays ``running`` on disk, like a killed one)."""
        if self._thread is not None and not self._ended:
            self._finish(("stop", None))
        self.wait()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is on disk (or given up); False after ``timeout``."""
        if self._thread is None or self._ended:
            return self.wait(timeout)
        done = threading.Event()
        self._queue.put(("flush", done), timeout=self.flush_s)
        return done.wait(self.flush_s if timeout is None else timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the writer to finish; False if it is still busy after ``timeout`` (default ``flush_s``)."""
        if self._thread is None:
            return True
        self._thread.join(self.flush_s if timeout is None else timeout)
        if self._thread.is_alive():
            self._fail(f"the writer had not finished after {self.flush_s if timeout is None else timeout:g} s")
            return False
        return True

    # -- internals ------------------------------------------------------------------------
    def _finish(self, item) -> bool:
        """Queue the last item; False if the writer never made room for it.  Only a caller that
        waits for the disk anyway waits long for room; a live session waits ``block_s``."""
        self._ended = True
        timeout = self.flush_s if self.wait_at_end else self.block_s
        try:
            self._queue.put(item, timeout=timeout)
            return True
        except queue.Full:
            self._abandoned = True  # the writer ends once it has drained what is queued
            self._fail(f"the disk took nothing for {timeout:g} s; the end of the run was not written")
            return False

    def _fail(self, why: str) -> None:
        if not self._error:
            self._error = why
            if self.report:
                log.error("recording %s is incomplete: %s", self.folder, why)
            self._tell("failed")

    def _tell(self, event: str) -> None:
        if self.notify is not None:
            try:
                self.notify(self, event)
            except Exception:  # a listener's bug must not stop the writer
                log.exception("recording listener failed on %s", event)

    def _write_loop(self, run: _RunWriter) -> None:
        try:
            self._write_all(run)
        finally:
            run.close()
            self._tell("done")

    def _write_all(self, run: _RunWriter) -> None:
        broken = False
        while True:
            try:
                what, item = self._queue.get(timeout=self.block_s)
            except queue.Empty:
                if self._abandoned:
                    return
                continue
            try:
                if not broken:
                    on_disk = run.steps_on_disk
                    if what == "start":
                        run.start(item)
                    elif what == "step":
                        run.step(item)
                    elif what == "end":
                        run.end(item)
                    if what == "end" or (what == "step" and not on_disk):
                        self._tell("writing")
                if what == "flush":
                    item.set()
            except Exception as exc:  # disk full, read-only …: keep what is whole, write nothing after
                broken = True
                if isinstance(exc, OSError):
                    self.disk_error = exc
                part = f"step {item.step}" if what == "step" else f"the run's {what}"
                self._fail(f"writing {part} failed: {describe_error(exc)}")
                if not run.steps_on_disk:
                    run.discard()  # nothing to replay: leave no folder without a readable run
            if what in ("end", "stop"):
                return

