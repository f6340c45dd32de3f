"""Replay: publish saved runs on a Bus exactly as the engine published them live.

Same records (RunStart, every StepFrame, RunEnd), same order, the original step timing
(``StepFrame.elapsed``) scaled by a speed factor, onto a Bus with the same sinks as the live
server, so a client cannot tell replay from live.  Imports numpy, json and Pillow only (via
the recording reader): a show machine without a GPU, torch or diffusers can run it.

Pacing keeps a *recording clock*: seconds of the original run that have been played.  It
advances with the wall clock times the speed and stands still while paused, so pause, resume
and speed changes in the middle of a run all keep the remaining steps' relative timing.
Steps are read from disk a few ahead by worker threads (:class:`ReadAhead`), so disk time
hides inside the wait and, at full speed, overlaps with the sinks' work.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .frames import RunEnd
from .recording import Recording, RecordingError, load_recording
from .recording.format import MANIFEST, STEPS_INDEX
from .recording.retention import hold

log = logging.getLogger(__name__)

MAX_SPEED = 1000.0


class ReplayError(UserError):
    """Nothing to replay, or a replay option out of range."""


def parse_speed(value) -> float:
    """A speed factor > 0 (1 = original timing), or ``max``/``inf`` for as fast as possible."""
    if isinstance(value, str) and value.strip().lower() in ("max", "inf", "fastest"):
        return math.inf
    try:
        speed = float(value)
    except (TypeError, ValueError):
        raise ReplayError(f"speed must be a number > 0 or 'max', got {value!r}") from None
    if math.isinf(speed) and speed > 0:
        return math.inf
    if not (0.0 < speed <= MAX_SPEED):
        raise ReplayError(f"speed must be > 0 and ≤ {MAX_SPEED:g} (or 'max'), got {value!r}")
    return speed


def find_recordings(path: str | Path) -> list[Path]:
    """The recordings at ``path``: the folder itself when it is one, else its sub-folders that
    are (sorted by name: a playlist).  Raises :class:`ReplayError` when there is none."""
    path = Path(path)
    if not path.exists():
        raise ReplayError(f"{path} does not exist; give a recording folder or a folder of recordings")
    if not path.is_dir():
        raise ReplayError(f"{path} is a file; give a recording folder (with {MANIFEST}) or a folder of recordings")
    if (path / MANIFEST).exists():
        return [path]
    found = sorted(p for p in path.iterdir() if p.is_dir() and (p / MANIFEST).exists())
    if not found:
        raise ReplayError(f"{path} is neither a recording (no {MANIFEST}) nor a folder of recordings")
    return found


# A recording whose manifest still says "running" and whose index changed this recently is
# being written right now (e.g. `serve --record` into the folder a show replays): not yet.
BEING_RECORDED_S = 30.0


def being_recorded(rec: Recording, now: float | None = None) -> bool:
    if rec.status != "running":
        return False
    newest = max((p.stat().st_mtime for p in (rec.folder / STEPS_INDEX, rec.folder / MANIFEST) if p.exists()), default=0.0)
    return (time.time() if now is None else now) - newest < BEING_RECORDED_S


def open_playlist(paths: Sequence[Path], warned: set | None = None, skip_live: bool = False) -> list[Recording]:
    """Open every recording; a single bad one is an error, a bad entry of a longer list is skipped
    with a warning (a show goes on with what it has).

    ``warned`` collects the paths already warned about, so a playlist re-read every loop does not
    repeat itself; ``skip_live`` leaves out recordings still being written (:func:`being_recorded`).
    """
    warned = set() if warned is None else warned

    def warn(path, message, *args):
        if path not in warned:
            warned.add(path)
            log.warning(message, *args)

    recordings = []
    for p in paths:
        try:
            rec = load_recording(p)
        except RecordingError as exc:
            if len(paths) == 1:
                raise ReplayError(str(exc)) from None
            warn(p, "skipping %s: %s", p, exc)
            continue
        if skip_live and len(paths) > 1 and being_recorded(rec):
            log.debug("%s is still being recorded; it joins the playlist once it is done", p)
            continue
        if len(rec) == 0:
            if len(paths) == 1:
                raise ReplayError(f"{p} has no completed steps to replay")
            warn(p, "skipping %s: no completed steps", p)
            continue
        if rec.truncated:
            warn(p, "%s is truncated (the run stopped without ending): it replays %d of %d steps and ends as cancelled",
                 p, len(rec), rec.start.steps)
        recordings.append(rec)
    if not recordings:
        raise ReplayError("none of the recordings could be read; see the warnings above")
    return recordings


def playlist_source(path: str | Path) -> Callable[[], list[Recording]]:
    """A function that (re-)reads the playlist at ``path``: a looping show picks up runs recorded
    into the folder while it plays, and drops ones that were deleted."""
    warned: set = set()

    def read() -> list[Recording]:
        return open_playlist(find_recordings(path), warned, skip_live=True)

    return read


class ReadAhead:
    """A recording's frames, read and decoded by worker threads a few steps ahead, in order.

    PNG decoding and file reads release the GIL, so with spare cores reading overlaps with
    the sinks' work and two previews decode at once.  A damaged step is yielded as its
    RecordingError (and ends the sequence) so the player can end the run cleanly.
    """

    def __init__(self, rec: Recording, depth: int = 6, workers: int = 2):
        self._rec = rec
        self._depth = depth
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="replay-read")
        self._pending: deque[Future] = deque()
        self._next = 0

    def _fill(self) -> None:
        while len(self._pending) < self._depth and self._next < len(self._rec):
            self._pending.append(self._pool.submit(self._rec.frame, self._next))
            self._next += 1

    def __iter__(self):
        self._fill()
        while self._pending:
            future = self._pending.popleft()
            try:
                item = future.result()
            except RecordingError as exc:
                yield exc
                return
            self._fill()
            yield item

    def close(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=False)


@dataclass(frozen=True)
class PlayerStatus:
    state: str  # "running" | "paused" | "waiting" (gap between runs) | "idle" (done)
    run_id: str
    step: int  # last published step, -1 before the first
    total: int
    speed: float
    entry: int  # index in the playlist
    entries: int
    loops: int  # completed passes over the playlist

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["speed"] = None if math.isinf(self.speed) else self.speed
        return d


class Player:
    """Plays a playlist of recordings onto ``bus``; thread-safe controls.

    ``play()`` blocks until the playlist ends (never with ``loop``) or :meth:`stop` is called.
    Controls may come from any thread: :meth:`pause`, :meth:`resume`, :meth:`next`,
    :meth:`set_speed`, :meth:`stop`.  ``paused=True`` sends the first run's start and then
    waits for :meth:`resume` (clients connect first, the show starts on cue).  ``next`` while
    paused ends the run and stays paused at the start of the next one.
    """

    def __init__(self, recordings: Sequence[Recording], bus, *, speed: float = 1.0, loop: bool = False,
                 shuffle: bool = False, gap: float = 1.0, seed: int | None = None, paused: bool = False,
                 on_change: Callable[[PlayerStatus], None] | None = None,
                 refresh: Callable[[], list[Recording]] | None = None):
        if not recordings:
            raise ReplayError("the playlist is empty")
        if gap < 0:
            raise ReplayError(f"gap must be ≥ 0 seconds, got {gap}")
        self.recordings = list(recordings)
        self.refresh = refresh  # called before every loop pass after the first (see playlist_source)
        self.bus = bus
        self.loop, self.shuffle, self.gap = loop, shuffle, gap
        self._rng = random.Random(seed)
        self._clock = time.monotonic
        self._on_change = on_change
        self._cond = threading.Condition()
        self._speed = parse_speed(speed)
        self._paused = paused
        self._skip = False
        self._stopped = False
        self._pos = 0.0  # recording clock, seconds of the current run
        self._last = self._clock()
        self._state = "idle"
        self._run_id, self._step, self._total, self._entry, self._loops = "", -1, 0, 0, 0

    # -- controls (any thread) -------------------------------------------------------------
    def pause(self) -> None:
        self._set(paused=True)

    def resume(self) -> None:
        self._set(paused=False)

    def next(self) -> None:
        """End the current run now (as cancelled) and go to the next entry."""
        self._set(skip=True)

    def set_speed(self, value) -> None:
        speed = parse_speed(value)
        self._set(speed=speed)

    def stop(self) -> None:
        self._set(stopped=True)

    @property
    def speed(self) -> float:
        return self._speed

    def status(self) -> PlayerStatus:
        with self._cond:
            state = "paused" if self._paused and self._state in ("running", "waiting") else self._state
            return PlayerStatus(state, self._run_id, self._step, self._total, self._speed, self._entry,
                                len(self.recordings), self._loops)

    def _set(self, *, paused=None, skip=None, speed=None, stopped=None) -> None:
        with self._cond:
            self._advance_clock()  # bank the time played at the old speed/pause state
            if paused is not None:
                self._paused = paused
            if skip is not None:
                self._skip = skip
            if speed is not None:
                self._speed = speed
            if stopped is not None:
                self._stopped = stopped
            self._cond.notify_all()
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            try:
                self._on_change(self.status())
            except Exception:
                log.exception("status listener failed")

    # -- playing ---------------------------------------------------------------------------
    def play(self) -> int:
        """Play until the playlist ends or :meth:`stop`; returns how many runs were played."""
        played = 0
        try:
            while not self._stopped:
                order = list(range(len(self.recordings)))
                if self.shuffle:
                    self._rng.shuffle(order)
                for index in order:
                    if self._stopped:
                        break
                    if played and self.gap > 0:
                        self._wait_gap()
                    with self._cond:
                        self._entry = index
                    self.play_one(self.recordings[index])
                    played += 1
                if not self.loop:
                    break
                with self._cond:
                    self._loops += 1
                self._refresh()
        finally:
            with self._cond:
                self._state = "idle"
            self._changed()
        return played

    def _refresh(self) -> None:
        if self.refresh is None:
            return
        try:
            fresh = self.refresh()
        except UserError as exc:  # e.g. the folder was emptied: keep playing what we have
            log.warning("playlist not re-read (%s); playing the previous one again", exc)
            return
        added = {str(r.folder) for r in fresh} - {str(r.folder) for r in self.recordings}
        if added or len(fresh) != len(self.recordings):
            log.info("playlist now has %d recording(s)%s", len(fresh),
                     f", new: {', '.join(sorted(Path(a).name for a in added))}" if added else "")
        self.recordings = fresh

    def play_one(self, rec: Recording) -> RunEnd | None:
        """Publish one recording: RunStart, its steps on time, RunEnd.  Returns the RunEnd sent,
        or None when the run was deleted before it could start.

        The run is held (:func:`~bridge.recording.retention.hold`) while it plays, so retention
        of a folder that is recorded into at the same time never deletes it under the show."""
        with hold(rec.folder):
            if not (rec.folder / MANIFEST).is_file():  # pruned after the playlist was read
                log.info("%s was deleted before it could play (retention); skipped", rec.folder.name)
                return None
            return self._play_held(rec)

    def _play_held(self, rec: Recording) -> RunEnd:
        start = rec.start
        with self._cond:
            self._skip = False
            self._pos, self._last = 0.0, self._clock()
            self._state, self._run_id, self._step, self._total = "running", start.run_id, -1, start.steps
        self._changed()
        log.info("replaying %s: %r, %d steps%s", rec.folder.name, start.prompt, len(rec),
                 " (truncated)" if rec.truncated else "")
        self.bus.publish(start)
        done, last_elapsed = 0, 0.0
        frames = ReadAhead(rec)
        try:
            for frame in frames:
                if isinstance(frame, RecordingError):
                    log.error("%s", frame)
                    end = RunEnd(start.run_id, "failed", done, last_elapsed, None, str(frame))
                    self.bus.publish(end)
                    return end
                if not self._wait_until(frame.elapsed):
                    end = RunEnd(start.run_id, "cancelled", done, last_elapsed, None,
                                 "stopped" if self._stopped else "skipped")
                    self.bus.publish(end)
                    return end
                self.bus.publish(frame)
                done, last_elapsed = done + 1, frame.elapsed
                with self._cond:
                    self._step = frame.step
        finally:
            frames.close()
        end = rec.run_end()
        self._wait_until(end.elapsed)  # a skip here still sends the recorded end: every step went out
        if rec.truncated:
            log.warning("%s ends here: the recording was truncated after step %d", rec.folder.name, done - 1)
        self.bus.publish(end)
        return end

    def _wait_gap(self) -> None:
        with self._cond:
            self._state, self._pos, self._last = "waiting", 0.0, self._clock()
            self._skip = False
        self._changed()
        self._wait_until(self.gap * (1.0 if math.isinf(self._speed) else self._speed), gap=True)

    def _advance_clock(self) -> None:
        now = self._clock()
        if not self._paused and not math.isinf(self._speed):
            self._pos += (now - self._last) * self._speed
        self._last = now

    def _wait_until(self, target: float, gap: bool = False) -> bool:
        """Block until the recording clock reaches ``target``; False if skipped or stopped.

        The gap between runs runs on wall time (``target`` is pre-scaled); a skip ends it early.
        """
        with self._cond:
            while True:
                if self._stopped or self._skip:
                    return False
                self._advance_clock()
                if math.isinf(self._speed) and not self._paused:
                    if gap:
                        return True
                    self._pos = max(self._pos, target)
                if self._pos >= target:
                    return True
                timeout = None if self._paused else (target - self._pos) / self._speed
                self._cond.wait(timeout)
