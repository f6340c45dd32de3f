"""The websocket sink in a process of its own, so the generation's interpreter never runs per-client work.

With fast steps (15 ms on a GPU) the websocket sink's Python work — encoding each
subscription's frames, word statistics, the writers of many clients — competes with the
generation for the interpreter lock.  :class:`WireProcessSink` keeps the Bus side in the
generation process and moves everything else into a child process that runs the ordinary
:class:`~bridge.sinks.websocket.WebSocketSink`: same protocol bytes, same back-pressure rule.

Per step the generation process only copies the frame's arrays into a shared-memory slot
(:mod:`~bridge.sinks.framering`) and sends a small header down a pipe; when every slot is
still held it skips the step rather than wait.  Controls from websocket clients come back up
the pipe to the session's ``controller``; its answer (or refusal) and a fresh status go down
with the reply.  The selected word is kept equal on both sides.

Messages on the pipe are tuples ``(kind, *args)``; both ends lock their sends (several
threads write).
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import threading
import time
from dataclasses import dataclass

from ..errors import UserError
from .framering import SLOTS, FrameRing
from .selection import Selection

log = logging.getLogger("bridge.sinks.wire")

START_TIMEOUT = 30.0  # seconds for the wire process to import, bind and report
ANSWER_TIMEOUT = 10.0  # seconds a control or a measurement may wait for the other side


@dataclass(frozen=True)
class ClientInfo:
    """What the wire process tells about one of its clients (benchmarks, tests)."""

    peer: str
    dropped: int
    queue: int  # batches waiting in its outbox


class Channel:
    """One end of the pipe: locked sends, and a thread that hands every message to ``handle``."""

    def __init__(self, conn, handle, name: str):
        self.conn, self.handle = conn, handle
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, name=name, daemon=True)
        self.closed = threading.Event()

    def start(self) -> "Channel":
        self._thread.start()
        return self

    def send(self, *message) -> bool:
        try:
            with self._lock:
                self.conn.send(message)
            return True
        except (OSError, EOFError, ValueError):  # the other side has gone
            return False

    def _read(self) -> None:
        try:
            while True:
                self.handle(*self.conn.recv())
        except (EOFError, OSError):
            pass
        finally:
            self.closed.set()


class Pending:
    """Answers awaited by id (controls, measurements)."""

    def __init__(self):
        self._ids = itertools.count()
        self._waiting: dict[int, list] = {}
        self._lock = threading.Lock()

    def open(self) -> tuple[int, threading.Event]:
        ask, done = next(self._ids), threading.Event()
        with self._lock:
            self._waiting[ask] = [done, None]
        return ask, done

    def answer(self, ask: int, value) -> None:
        with self._lock:
            slot = self._waiting.get(ask)
        if slot is not None:
            slot[1] = value
            slot[0].set()

    def wait(self, ask: int, done: threading.Event, timeout: float):
        ok = done.wait(timeout)
        with self._lock:
            value = self._waiting.pop(ask, [None, None])[1]
        return value if ok else None


class WireProcessSink:
    """The Bus side of the websocket sink running in its own process.

    Takes :class:`~bridge.sinks.websocket.WebSocketSink`'s arguments and offers its Bus
    methods and its measurements (``clients``, ``dropped``, ``latencies``, ``step_bytes``).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8765, *, selection: Selection | None = None,
                 controller=None, status=None, slots: int = SLOTS, **options):
        self.selection = selection or Selection()
        self.controller, self.status = controller, status or (lambda: {"state": "idle"})
        self.options = {"host": host, "port": port, **options}
        self.host, self.port, self.token = host, port, options.get("token", "")
        self.url = self.http_url = ""
        self.ring = FrameRing(slots)
        self.pending = Pending()
        self._ready = threading.Event()
        self._failure = ""
        self._process = None
        self._channel: Channel | None = None
        self.selection.add_listener(self._selected_here)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "WireProcessSink":
        from .wire_child import run_child

        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch, no model, no threads inherited
        here, there = ctx.Pipe(duplex=True)
        level = logging.getLogger().getEffectiveLevel()
        self._process = ctx.Process(target=run_child, args=(there, self.options, level), name="bridge-wire", daemon=True)
        self._process.start()
        there.close()
        self._channel = Channel(here, self._on_message, "wire-process-reader").start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._ready.wait(0.05):
            if self._channel.closed.is_set() or time.monotonic() > deadline:
                self._stop_process()
                raise UserError(self._failure or "the websocket wire process did not start; run without --wire-process")
        if self._failure:
            self._stop_process()
            raise UserError(self._failure)
        self._send("status", dict(self.status()))
        return self

    def close(self, drain: float = 0.0) -> None:
        if self._channel is not None and self._process is not None and self._process.is_alive():
            self._ask("close", drain, timeout=drain + ANSWER_TIMEOUT)
        self._stop_process()

    def drain(self, timeout: float = 3.0) -> None:
        """Wait (up to ``timeout``) until every client's queue has gone out."""
        self._ask("drain", timeout, timeout=timeout + ANSWER_TIMEOUT)

    def _stop_process(self) -> None:
        if self._process is not None:
            self._process.join(5)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(5)
        if self._channel is not None:
            self._channel.conn.close()
        self.ring.close()

    @property
    def alive(self) -> bool:
        """Whether the wire process is running."""
        return self._process is not None and self._process.is_alive()

    # ------------------------------------------------------------------ Bus sink (any thread)

    def on_run_start(self, event) -> None:
        self._send("status", dict(self.status()))
        self._send("event", event, time.perf_counter())

    def on_step(self, event) -> None:
        t = time.perf_counter()
        header = self.ring.put(event)
        if header is not None and not self._send("step", header, t):
            self.ring.release(header["slot"])

    def on_run_end(self, event) -> None:
        self._send("event", event, time.perf_counter())
        self._send("status_all", dict(self.status()))

    def broadcast_status(self) -> None:
        self._send("status_all", dict(self.status()))

    def broadcast(self, message: dict) -> None:
        self._send("broadcast", message)

    # ------------------------------------------------------------------ measurements

    def measure(self, *what: str) -> dict:
        """Figures from the wire process: any of "clients", "latencies", "step_bytes", "cpu", "torch"."""
        what = what or ("clients", "latencies", "step_bytes", "cpu", "torch")
        return self._ask("measure", what) or {"clients": [], "latencies": [], "step_bytes": [], "cpu": 0.0, "torch": None}

    @property
    def clients(self) -> list[ClientInfo]:
        return [ClientInfo(*c) for c in self.measure("clients")["clients"]]

    @property
    def dropped(self) -> int:
        return sum(c.dropped for c in self.clients)

    @property
    def latencies(self) -> list[float]:
        return self.measure("latencies")["latencies"]

    @property
    def step_bytes(self) -> list[int]:
        return self.measure("step_bytes")["step_bytes"]

    def thread_cpu(self) -> float:
        """CPU seconds used so far by the whole wire process."""
        return self.measure("cpu")["cpu"]

    # ------------------------------------------------------------------ the pipe

    def _send(self, *message) -> bool:
        return self._channel is not None and self._channel.send(*message)

    def _ask(self, kind: str, *args, timeout: float = ANSWER_TIMEOUT):
        ask, done = self.pending.open()
        if not self._send(kind, ask, *args):
            return None
        return self.pending.wait(ask, done, timeout)

    def _on_message(self, kind: str, *args) -> None:
        if kind == "free":
            self.ring.release(args[0])
        elif kind == "control":
            self._control(*args)
        elif kind == "select":
            self.selection.follow(args[0])
        elif kind == "answer":
            self.pending.answer(*args)
        elif kind == "log":
            name, level, text = args
            logging.getLogger(name).log(level, "%s", text)
        elif kind == "ready":
            self.url, self.http_url, self.port = args
            self._ready.set()
        elif kind == "failed":
            self._failure = args[0]
            self._ready.set()

    def _control(self, ask: int, control) -> None:
        """A websocket client's control, applied here; the refusal (if any) goes back with a fresh status."""
        from .. import protocol as P
        from ..control import ControlError

        refusal = None
        try:
            if self.controller is None:
                raise ControlError(f"{control.kind} is not available here", "unknown_type")
            self.controller(control)
        except ControlError as exc:
            refusal = ("control", exc.code, str(exc))
        except (UserError, P.ProtocolError) as exc:
            refusal = ("user", "invalid_value", str(exc))
        except Exception as exc:  # a bug in a controller must not end the wire
            log.exception("control %s failed", control.kind)
            refusal = ("failed", "failed", str(exc))
        self._send("answer", ask, (refusal, dict(self.status())))

    def _selected_here(self, index: int) -> None:
        self._send("select", index)
