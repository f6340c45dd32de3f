"""Fan-out of run events to sinks.

A sink is any object with ``on_run_start``, ``on_step`` and ``on_run_end`` (missing methods are
skipped).  Sinks are called synchronously on the producer's thread, so a sink must return fast:
network sinks hand the frame to their own thread/loop and drop stale frames there.  A sink that
raises is logged and kept; one bad sink never stops generation or the other sinks.
"""

from __future__ import annotations

import logging
import threading

from .frames import Event, RunEnd, RunStart, StepFrame

log = logging.getLogger(__name__)

_METHOD = {RunStart: "on_run_start", StepFrame: "on_step", RunEnd: "on_run_end"}


class Bus:
    def __init__(self, sinks=()):
        self._sinks = list(sinks)
        self._lock = threading.Lock()

    def add(self, sink) -> None:
        with self._lock:
            self._sinks.append(sink)

    def remove(self, sink) -> None:
        with self._lock:
            if sink in self._sinks:
                self._sinks.remove(sink)

    @property
    def sinks(self) -> list:
        with self._lock:
            return list(self._sinks)

    def publish(self, event: Event) -> None:
        name = _METHOD[type(event)]
        for sink in self.sinks:
            handler = getattr(sink, name, None)
            if handler is None:
                continue
            try:
                handler(event)
            except Exception:  # a broken sink must not stop the run
                log.exception("sink %s failed on %s", type(sink).__name__, name)

    def close(self) -> None:
        for sink in self.sinks:
            close = getattr(sink, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    log.exception("sink %s failed to close", type(sink).__name__)
