"""Collapse repeated log lines: one line per distinct message per interval, with its count.

A flood of one message (asyncio's "socket.accept() out of system resource" when file
descriptors run out, the same refusal a thousand times) must not fill a show machine's disk.
:class:`RepeatFilter` on a handler lets a message through, then drops the same message (same
logger, level and text) for ``interval`` seconds; the next one let through says how many were
dropped: ``"… (repeated 1234 times in the last 10 s)"``.  Different messages are never held up.
A message longer than :data:`MAX_CHARS` (a library echoing a 2000-character prompt) is clipped.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

INTERVAL = 10.0  # seconds
MAX_KEYS = 512  # distinct messages remembered; the oldest is forgotten first
MAX_CHARS = 1000  # of one message; tracebacks (exc_info) are not counted


class RepeatFilter(logging.Filter):
    def __init__(self, interval: float = INTERVAL, clock=time.monotonic, max_keys: int = MAX_KEYS):
        super().__init__()
        self.interval, self.clock, self.max_keys = interval, clock, max_keys
        self._seen: OrderedDict[tuple, list] = OrderedDict()  # key → [time let through, dropped since]

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a bad format string: let logging report it as usual
            return True
        key = (record.name, record.levelno, text, record.exc_info[0] if record.exc_info else None)
        now = self.clock()
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return False
        if len(text) > MAX_CHARS:
            text = f"{text[:MAX_CHARS]}… ({len(text)} characters)"
            record.msg, record.args = text, None
        if entry is not None and entry[1]:
            head, sep, rest = text.partition("\n")  # the count on the first line of a long message
            record.msg = f"{head} (repeated {entry[1]} times in the last {now - entry[0]:.0f} s){sep}{rest}"
            record.args = None
        self._seen[key] = [now, 0]
        self._seen.move_to_end(key)
        while len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
        return True


def install(handler: logging.Handler, interval: float = INTERVAL) -> RepeatFilter:
    """Put a :class:`RepeatFilter` on ``handler``; returns it."""
    repeat = RepeatFilter(interval)
    handler.addFilter(repeat)
    return repeat
