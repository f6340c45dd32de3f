"""The wire process: an ordinary websocket sink fed from the pipe (see :mod:`bridge.sinks.wire_process`).

Runs in a fresh interpreter that never imports torch.  One thread reads the pipe: a step's
arrays are copied out of their shared-memory slot and the slot handed back at once, then the
record goes to the sink's loop like any Bus event.  Controls from clients go up the pipe and
wait for the generation process's answer; the status the sink sends is the latest one the
generation process sent down.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

from ..control import ControlError
from ..errors import UserError
from .framering import RingReader
from .selection import Selection
from .wire_process import ANSWER_TIMEOUT, Channel, Pending

log = logging.getLogger("bridge.sinks.wire")


class WireChild:
    def __init__(self, conn, options: dict):
        from .websocket import WebSocketSink

        self.status = {"state": "idle"}
        self.pending = Pending()
        self.reader = RingReader()
        self.selection = Selection()
        self.finished = threading.Event()
        self.channel = Channel(conn, self.on_message, "wire-pipe-reader")
        self.sink = WebSocketSink(**options, selection=self.selection, controller=self.controller,
                                  status=lambda: self.status)
        self.selection.add_listener(lambda index: self.channel.send("select", index))

    def run(self) -> None:
        try:
            self.sink.start()
        except UserError as exc:
            self.channel.send("failed", str(exc))
            return
        self.channel.send("ready", self.sink.url, self.sink.http_url, self.sink.port)
        self.channel.start()
        while not self.finished.wait(0.5):  # ends on close, or when the generation process is gone
            if self.channel.closed.is_set():
                break
        self.sink.close()
        self.reader.close()

    # ------------------------------------------------------------------ from the generation process

    def on_message(self, kind: str, *args) -> None:
        sink = self.sink
        if kind == "step":
            header, t = args
            frame = self.reader.take(header)
            self.channel.send("free", header["slot"])
            sink.server.call(sink.fanout.publish, frame, t)
        elif kind == "event":
            sink.server.call(sink.fanout.publish, *args)
        elif kind == "status":  # on the loop, in order with the records before it
            sink.server.call(setattr, self, "status", args[0])
        elif kind == "status_all":
            sink.server.call(setattr, self, "status", args[0])
            sink.broadcast_status()
        elif kind == "broadcast":
            sink.broadcast(args[0])
        elif kind == "select":
            sink.server.call(self.selection.follow, args[0])
        elif kind == "answer":
            self.pending.answer(*args)
        elif kind == "measure":
            sink.server.call(self._measure, *args)
        elif kind == "drain":
            sink.drain(args[1])
            self.channel.send("answer", args[0], True)
        elif kind == "close":
            sink.drain(args[1])
            self.channel.send("answer", args[0], True)
            self.finished.set()

    def _measure(self, ask: int, what) -> None:
        sink, times = self.sink, os.times()
        figures = {"clients": lambda: [(c.peer, c.dropped, len(c.outbox) + c.in_flight) for c in sink.clients],
                   "latencies": lambda: list(sink.latencies), "step_bytes": lambda: list(sink.step_bytes),
                   "cpu": lambda: times.user + times.system, "torch": lambda: "torch" in sys.modules}
        self.channel.send("answer", ask, {name: figures[name]() for name in what if name in figures})

    # ------------------------------------------------------------------ to the generation process

    def controller(self, control) -> None:
        """Apply ``control`` in the generation process (this waits for its answer; controls are rare)."""
        ask, done = self.pending.open()
        if not self.channel.send("control", ask, control):
            raise ControlError("the bridge is shutting down", "failed")
        answer = self.pending.wait(ask, done, ANSWER_TIMEOUT)
        if answer is None:
            raise ControlError(f"{control.kind}: the bridge did not answer within {ANSWER_TIMEOUT:g} s", "failed")
        refusal, self.status = answer
        if refusal is not None:
            how, code, message = refusal
            if how == "control":
                raise ControlError(message, code)
            if how == "user":
                raise UserError(message)
            raise RuntimeError(message)


class PipeLogHandler(logging.Handler):
    """Log records go up the pipe and are logged by the generation process's own handlers."""

    def __init__(self, channel: Channel):
        super().__init__()
        self.channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            self.channel.send("log", record.name, record.levelno, text)
        except Exception:
            self.handleError(record)


def run_child(conn, options: dict, level: int) -> None:
    """The wire process's entry point."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the generation process closes this one
    child = WireChild(conn, options)
    handler = PipeLogHandler(child.channel)  # the generation process's handlers collapse floods (bridge/logrepeat.py)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if level > logging.DEBUG:  # as configure_logging: one line per connection drowns the log
        logging.getLogger("websockets").setLevel(logging.WARNING)
    child.run()
