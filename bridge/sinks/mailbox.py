"""A thread-safe queue that keeps at most one pending step: the newest.

Sinks that do slow work (OSC bundles, Spout uploads) run it on their own thread and hand
events over through a mailbox, so the generation thread never waits.  Run starts and ends are
kept in order; a step still waiting when a newer step arrives is replaced and counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from ..frames import StepFrame


class Mailbox:
    def __init__(self):
        self._items: deque = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._unfinished = 0
        self.dropped = 0

    def put(self, event) -> None:
        """Never blocks.  A pending, unprocessed step is replaced by a newer one.
        Items are (event, time put) so a consumer can measure how long an event waited."""
        item = (event, time.perf_counter())
        with self._cond:
            if isinstance(event, StepFrame) and self._items and isinstance(self._items[-1][0], StepFrame):
                self._items[-1] = item
                self.dropped += 1
            else:
                self._items.append(item)
                self._unfinished += 1
            self._cond.notify_all()

    def get(self, timeout: float | None = None):
        """The next (event, time put), or None once closed (or after ``timeout`` with nothing pending)."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    def task_done(self) -> None:
        with self._cond:
            self._unfinished -= 1
            self._cond.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every event put so far has been handled."""
        with self._cond:
            return self._cond.wait_for(lambda: self._unfinished <= 0, timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


class ThreadedSink:
    """Base for sinks that handle events on a worker thread fed by a :class:`Mailbox`.

    Subclasses implement ``handle(event)``; it runs on the worker thread.  An exception in it
    is logged and the worker goes on with the next event.
    """

    name = "sink"

    def __init__(self):
        self.latencies: deque = deque(maxlen=100_000)  # seconds from on_step to the step handled
        self._log = logging.getLogger(f"bridge.sinks.{self.name}")
        self.mailbox = Mailbox()
        self._thread = threading.Thread(target=self._work, name=f"{self.name}-sink", daemon=True)
        self._thread.start()

    def on_run_start(self, event) -> None:
        self.mailbox.put(event)

    def on_step(self, event) -> None:
        self.mailbox.put(event)

    def on_run_end(self, event) -> None:
        self.mailbox.put(event)

    @property
    def dropped(self) -> int:
        return self.mailbox.dropped

    def handle(self, event) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _work(self) -> None:
        while True:
            item = self.mailbox.get(timeout=0.5)
            if item is None:
                if self.mailbox.closed:
                    return
                continue
            event, t_put = item
            try:
                self.handle(event)
                if isinstance(event, StepFrame):
                    self.latencies.append(time.perf_counter() - t_put)
            except Exception:
                self._log.exception("%s sink failed on %s", self.name, type(event).__name__)
            finally:
                self.mailbox.task_done()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued event has been handled (tests, shutdown)."""
        return self.mailbox.join(timeout)

    def close(self) -> None:
        self.flush(2.0)
        self.mailbox.close()
        self._thread.join(2.0)
