"""The generation worker: one thread that runs ``engine.generate`` for VJ prompts and playlists.

Controls arrive on other threads (websocket loop, OSC receiver) and only set flags under one
condition variable.  The engine asks :meth:`Runner.interrupted` before every layer (bridge/interrupt.py),
so a newer prompt, cancel or next ends a run mid-step, and :meth:`Runner.should_stop` after
every step, where a pause holds the run.

- VJ mode: a submitted request replaces any pending one and interrupts the running run at
  its next layer (attention or residual block); the next run starts at once.
- Installation mode: when nothing is submitted, the next playlist entry runs; after each
  playlist run the image is held for ``pause`` seconds.  A run that fails is logged and
  skipped; the loop never ends on an error.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, replace

from ..errors import UserError
from ..frames import RunEnd
from ..limits import LIMITS

log = logging.getLogger(__name__)
_SEEDS = int(LIMITS.seed.hi) + 1  # playlist seeds wrap inside the table's range

# An installation runs for weeks: keep a bounded history of finished runs, and their final
# images (the bulk of a RunEnd) only for the newest few.
HISTORY_RUNS = 50
HISTORY_IMAGES = 3


@dataclass
class Playlist:
    """Prompts played in order; ``loops`` passes (0: forever); one seed per run by ``seeds``."""

    prompts: list
    seeds: str = "random"  # random | increment | fixed
    base_seed: int = 0
    loops: int = 0
    pause: float = 5.0

    def __post_init__(self):
        self.position = 0  # runs handed out so far
        self._rng = random.Random(self.base_seed)

    @property
    def loops_done(self) -> int:
        return self.position // len(self.prompts) if self.prompts else 0

    @property
    def finished(self) -> bool:
        return not self.prompts or bool(self.loops and self.position >= self.loops * len(self.prompts))

    def next_entry(self) -> tuple[str, int] | None:
        """(prompt, seed) of the next run, or None when all loops are done."""
        if self.finished:
            return None
        prompt = self.prompts[self.position % len(self.prompts)]
        if self.seeds == "fixed":
            seed = self.base_seed
        elif self.seeds == "increment":
            seed = (self.base_seed + self.position) % _SEEDS
        else:
            seed = self._rng.randrange(_SEEDS)
        self.position += 1
        return prompt, seed


class Runner:
    """Owns the generation thread.  ``make_request(prompt=None, seed=None)`` builds a validated
    request from the current settings; ``on_error(code, message)`` reports refused or failed
    runs; ``on_state()`` is called whenever :attr:`state` changes; ``regions()`` and
    ``concepts()``, if given, tell the engine the self-attention query regions and the concept
    names at every step start."""

    def __init__(self, engine, bus, make_request, on_error=None, on_state=None, regions=None, concepts=None):
        self.engine, self.bus = engine, bus
        self.regions, self.concepts = regions, concepts
        self.make_request = make_request
        self.on_error = on_error or (lambda code, message: None)
        self.on_state = on_state or (lambda: None)
        self.mode = "vj"
        self.playlist: Playlist | None = None
        self.state = "idle"
        self.run_id = ""
        self.runs: list[RunEnd] = []  # the last HISTORY_RUNS finished runs, oldest first (tests, logs)
        self.runs_done = 0  # finished runs since start, all of them
        self._cond = threading.Condition()
        self._pending = None  # a request waiting to run (VJ prompt)
        self._cancel = self._skip = self._stop = self._paused = False
        self._thread = threading.Thread(target=self._loop, name="generation", daemon=True)

    # ------------------------------------------------------------------ controls (any thread)

    def start(self) -> None:
        self._thread.start()

    def submit(self, request) -> None:
        """Run ``request`` next, interrupting the current run at its next step end."""
        with self._cond:
            self._pending = request
            self._skip = True  # also ends an installation pause at once
            self._cond.notify_all()

    def cancel(self) -> None:
        with self._cond:
            self._cancel = True
            self._cond.notify_all()

    def next(self) -> None:
        with self._cond:
            self._cancel = self._skip = True
            self._cond.notify_all()

    def pause(self) -> None:
        with self._cond:
            self._paused = True
            self._cond.notify_all()
        self._set_state("paused" if self.state == "idle" else self.state)

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def set_mode(self, mode: str, playlist: Playlist | None) -> None:
        with self._cond:
            self.mode, self.playlist = mode, playlist
            self._cond.notify_all()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stop = self._cancel = True
            self._paused = False
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def paused(self) -> bool:
        return self._paused

    def wait_for(self, predicate, timeout: float) -> bool:
        """Block until ``predicate(runner)`` holds (checked on every state change); tests."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    # ------------------------------------------------------------------ engine callback

    def interrupted(self) -> bool:
        """True when the running run must end now; lock-free (plain reads of flags set under
        the lock) because the engine asks before every layer."""
        return self._stop or self._cancel or self._pending is not None

    def should_stop(self) -> bool:
        """Called by the engine after every step: True ends the run; a pause blocks here."""
        with self._cond:
            if self._paused and not (self._stop or self._cancel or self._pending):
                self._state_locked("paused")
                while self._paused and not (self._stop or self._cancel or self._pending):
                    self._cond.wait(0.25)
                self._state_locked("running")
            return self._stop or self._cancel or self._pending is not None

    # ------------------------------------------------------------------ the thread

    def _set_state(self, state: str) -> None:
        with self._cond:
            self._state_locked(state)

    def _state_locked(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._cond.notify_all()
            self.on_state()  # must not block: sinks only schedule a status message

    def _next_job(self):
        """Wait for something to run: (request, from_playlist) or None to stop."""
        with self._cond:
            while True:
                if self._stop:
                    return None
                if not self._paused:
                    if self._pending is not None:
                        request, self._pending = self._pending, None
                        self._cancel = self._skip = False
                        return request, False
                    if self.mode == "installation" and self.playlist is not None:
                        entry = self.playlist.next_entry()
                        if entry is not None:
                            self._cancel = self._skip = False
                            return entry, True
                self._state_locked("paused" if self._paused else "idle")
                self._cond.wait(0.5)

    def _loop(self) -> None:
        while True:
            job = self._next_job()
            if job is None:
                self._set_state("stopped")
                return
            what, from_playlist = job
            if from_playlist:
                prompt, seed = what
                try:
                    request = self.make_request(prompt=prompt, seed=seed)
                except UserError as exc:
                    log.error("playlist entry %r skipped: %s", prompt, exc)
                    self.on_error("invalid_value", f"playlist entry {prompt!r} skipped: {exc}")
                    continue
            else:
                request = what
            self._run(request)
            if from_playlist:
                self._hold(self.playlist.pause if self.playlist else 0.0)

    def _run(self, request) -> None:
        self._set_state("running")
        try:
            end = self.engine.generate(request, self.bus, self.should_stop, self.interrupted, regions=self.regions,
                                       concepts=self.concepts)
        except UserError as exc:  # refused before it started (engine busy, invalid request)
            log.error("run refused: %s", exc)
            self.on_error("invalid_value", str(exc))
            return
        except Exception as exc:  # never let one run end the worker
            log.exception("run crashed")
            self.on_error("failed", f"the run failed: {type(exc).__name__}: {exc}")
            return
        with self._cond:
            self._remember(end)
            self.run_id = end.run_id
            self._cond.notify_all()
        if end.status == "failed":
            log.error("run %s failed after %d steps: %s", end.run_id, end.steps_done, end.error)
            self.on_error("failed", f"run {end.run_id} failed after {end.steps_done} steps: {end.error}")
        else:
            log.info("run %s %s (%d steps, %.1f s)", end.run_id, end.status, end.steps_done, end.elapsed)

    def _remember(self, end: RunEnd) -> None:
        """Append ``end`` to the bounded history (under the lock)."""
        self.runs.append(end)
        self.runs_done += 1
        del self.runs[:-HISTORY_RUNS]
        if len(self.runs) > HISTORY_IMAGES and self.runs[-HISTORY_IMAGES - 1].image is not None:
            self.runs[-HISTORY_IMAGES - 1] = replace(self.runs[-HISTORY_IMAGES - 1], image=None)

    def _hold(self, seconds: float) -> None:
        """Installation pause between runs; ends early on a prompt, next or stop."""
        deadline = time.monotonic() + seconds
        with self._cond:
            self._state_locked("waiting")
            while not (self._stop or self._skip or self._pending is not None):
                left = deadline - time.monotonic()
                if left <= 0 and not self._paused:
                    break
                self._cond.wait(min(max(left, 0.05), 0.5))
            self._skip = False
