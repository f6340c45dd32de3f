"""Websocket sink: binary texture frames and JSON metadata to many clients, plus control in.

One asyncio loop on its own thread runs a ``websockets`` server that also serves the browser
viewer (static files from ``web/``) on the same port through ``process_request``.

Never slowing generation: ``on_*`` only schedule work on the loop and return.  On the loop,
each event is encoded and framed once per subscription variant and written to every
client's socket without waiting; a client whose socket backs up keeps at most one pending
step (a newer one replaces it, counted as dropped) while a drain task waits for it.  A
stalled client therefore never delays generation or another client.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import mimetypes
import socket
import struct
import threading
import time
from collections import deque
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response
from websockets.protocol import State

from .. import protocol as P
from ..control import Control, ControlError, parse_json_control
from ..errors import UserError
from ..frames import RunEnd, RunStart, StepFrame
from ..wordstats import StatsTracker, stats_dicts
from .selection import Selection

log = logging.getLogger(__name__)

# Incoming messages are control JSON: a few hundred bytes.  The websocket layer accepts up to
# 1 MiB (bigger closes with 1009) so that a merely oversized control gets a readable error.
MAX_INCOMING = 2**20
MAX_CONTROL = 256 * 1024  # room for a 10 000-word prompt, so its error names the word count
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
# Kernel send buffer per client.  Linux autotunes it up to 4 MiB, which is seconds of stale
# frames queued for a slow client; a bounded buffer makes "latest frame" hold on the wire too.
SEND_BUFFER = 256 * 1024
STALL_TIMEOUT = 30.0  # seconds a client may read nothing at all before it is dropped
CLOSE_TIMEOUT = 2.0  # seconds a closing handshake may take before the connection is dropped
SERVER_NAME = "attention-bridge"


def needs_token(host: str) -> bool:
    return host not in LOCAL_HOSTS


async def _thread_time() -> float:
    return time.thread_time()


def ws_frame(message: bytes | str) -> bytes:
    """One unfragmented, unmasked server → client websocket frame (RFC 6455 §5.2).

    Server frames carry no mask and compression is off, so a message's frame is the same
    bytes for every client: it is built once per event and written to each socket as is.
    """
    if isinstance(message, str):
        opcode, payload = 0x1, message.encode("utf-8")
    else:
        opcode, payload = 0x2, bytes(message)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


def ws_frames(messages) -> bytes:
    return b"".join(ws_frame(m) for m in messages)


class _Client:
    """One connection and its delivery state.

    Writes go straight to the socket's transport while it keeps up.  When the transport's
    buffer passes its high-water mark (websockets pauses writing), the client is congested:
    a drain task waits for it, and meanwhile at most one step waits in ``queue`` — a newer
    step replaces it and counts as dropped.  Generation and other clients never wait.
    """

    __slots__ = ("ws", "sub", "queue", "drainer", "dropped", "peer", "metrics", "stall_timeout")

    def __init__(self, ws: ServerConnection, metrics: tuple, stall_timeout: float = STALL_TIMEOUT):
        self.ws = ws
        self.sub = P.Subscription()
        self.queue: deque = deque()  # (droppable, framed bytes, t_event)
        self.drainer: asyncio.Task | None = None
        self.dropped = 0
        self.peer = _peer(ws)
        self.metrics = metrics  # (latencies, step_bytes) of the sink
        self.stall_timeout = stall_timeout

    def push(self, messages: list, t_event: float, droppable: bool = False, framed: bytes | None = None) -> None:
        """Deliver messages (or an already framed batch) now, or queue them if congested."""
        if framed is None:
            if not messages:
                return
            framed = ws_frames(messages)
        if self.drainer is not None or self.queue:
            if droppable:
                stale = sum(1 for item in self.queue if item[0])
                if stale:
                    self.dropped += stale
                    self.queue = deque(item for item in self.queue if not item[0])
            self.queue.append((droppable, framed, t_event))
            return
        if self._write(framed, droppable, t_event) and self.ws.paused:
            self.drainer = asyncio.get_running_loop().create_task(self._drain())

    def _write(self, data: bytes, droppable: bool, t_event: float) -> bool:
        ws = self.ws
        if ws.protocol.state is not State.OPEN or ws.transport.is_closing():
            return False  # closing: the handler will forget this client
        ws.transport.write(data)
        if droppable:
            self.metrics[0].append(time.perf_counter() - t_event)
            self.metrics[1].append(len(data))
        return True

    async def _drain(self) -> None:
        try:
            while True:
                try:
                    await asyncio.wait_for(self.ws.drain(), self.stall_timeout)
                except asyncio.TimeoutError:
                    log.warning("websocket client %s read nothing for %g s; closing it", self.peer, self.stall_timeout)
                    self.ws.transport.abort()
                    return
                if not self.queue or self.ws.protocol.state is not State.OPEN:
                    return
                while self.queue and not self.ws.paused:
                    droppable, data, t_event = self.queue.popleft()
                    self._write(data, droppable, t_event)
        except Exception:  # connection lost while waiting: nothing more to send
            self.queue.clear()
        finally:
            self.drainer = None


def _bound_send_buffer(ws) -> None:
    sock = ws.transport.get_extra_info("socket") if ws.transport else None
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        except OSError:
            pass


def _peer(ws) -> str:
    try:
        host, port = ws.remote_address[:2]
        return f"{host}:{port}"
    except Exception:
        return "?"


class WebSocketSink:
    """The websocket + HTTP server as a Bus sink.

    ``controller(control)`` receives every validated control except subscribe/select/status
    (handled here); it may raise :class:`UserError` to refuse it.  ``status()`` returns the
    server-wide fields of a ``status`` message.  Call :meth:`start` before publishing.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8765, *, token: str = "", web_root=None,
                 selection: Selection | None = None, controller=None, status=None, presets=(),
                 max_control: int = MAX_CONTROL, stall_timeout: float = STALL_TIMEOUT):
        if needs_token(host) and not token:
            raise UserError(f"listening on {host} (not 127.0.0.1) needs a shared token: add --token SECRET")
        self.host, self.port, self.token = host, port, token
        self.web_root = Path(web_root).resolve() if web_root else None
        self.selection = selection or Selection()
        self.controller = controller
        self.status_fields = status or (lambda: {"state": "idle"})
        self.presets = list(presets)
        self.max_control = max_control
        self.stall_timeout = stall_timeout
        self.encoder = P.FrameEncoder()
        self.stats = StatsTracker()
        self.clients: set[_Client] = set()
        self.latencies: deque = deque(maxlen=100_000)  # seconds, step event → last byte handed to the socket
        self.step_bytes: deque = deque(maxlen=100_000)  # bytes per client per step
        self._start: RunStart | None = None
        self._last_step: StepFrame | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Future | None = None
        self.selection.add_listener(self._selection_changed)

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        suffix = f"?token={self.token}" if needs_token(self.host) else ""
        return f"ws://{host}:{self.port}/{suffix}"

    @property
    def http_url(self) -> str:
        return "http" + self.url[2:]

    def start(self) -> "WebSocketSink":
        ready = threading.Event()
        failure: list[BaseException] = []

        def run():
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve(ready))
            except BaseException as exc:  # bind errors surface in start()
                failure.append(exc)
                ready.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="websocket-sink", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            exc = failure[0]
            if isinstance(exc, OSError):
                raise UserError(f"cannot listen on {self.host}:{self.port} ({exc.strerror or exc}); "
                                "is another bridge running? choose another --port") from None
            raise exc
        return self

    async def _serve(self, ready: threading.Event) -> None:
        self._stop = asyncio.get_running_loop().create_future()
        async with serve(self._handler, self.host, self.port, process_request=self._process_request,
                         max_size=MAX_INCOMING, compression=None, close_timeout=CLOSE_TIMEOUT) as server:
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            await self._stop
            closing = {}
            for c in list(self.clients):
                if c.drainer is not None:  # backed up: a close frame would wait behind its data forever
                    c.ws.transport.abort()
                else:
                    closing[asyncio.create_task(c.ws.close(1001, "bridge shutting down"))] = c
            if closing:  # all at once, bounded: one slow client must not hold up the others
                _, late = await asyncio.wait(closing, timeout=CLOSE_TIMEOUT + 1)
                for task in late:
                    closing[task].ws.transport.abort()

    def close(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread and self._thread.is_alive():
            self._loop.call_soon_threadsafe(lambda: self._stop.done() or self._stop.set_result(None))
            self._thread.join(2 * CLOSE_TIMEOUT + 2)

    # ------------------------------------------------------------------ Bus sink (any thread)

    def on_run_start(self, event: RunStart) -> None:
        self._post(self._dispatch, event, time.perf_counter())

    def on_step(self, event: StepFrame) -> None:
        self._post(self._dispatch, event, time.perf_counter())

    def on_run_end(self, event: RunEnd) -> None:
        self._post(self._dispatch, event, time.perf_counter())

    def broadcast_status(self) -> None:
        """Send a fresh ``status`` to every client (thread-safe)."""
        self._post(self._status_all)

    def broadcast(self, message: dict) -> None:
        self._post(self._send_all, P.encode_json(message))

    def _post(self, fn, *args) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # loop closed while shutting down
                pass

    def thread_cpu(self) -> float:
        """CPU seconds used so far by the sink's loop thread (benchmarks: server cost per step)."""
        if self._loop is None or self._loop.is_closed():
            return 0.0
        return asyncio.run_coroutine_threadsafe(_thread_time(), self._loop).result(5)

    @property
    def dropped(self) -> int:
        return sum(c.dropped for c in self.clients)

    # ------------------------------------------------------------------ on the loop

    def _dispatch(self, event, t_event: float) -> None:
        if isinstance(event, RunStart):
            self._start, self._last_step = event, None
            self.selection.set_words(event.words)
            self._send_all(P.encode_json(P.run_start_message(event)), t_event)
            self._status_all()
        elif isinstance(event, StepFrame):
            self._last_step = event
            stats = self.stats.update(event)  # every step, so "change" never depends on who is connected
            if not self.clients:
                return
            meta = P.encode_json(P.step_message(event, stats_dicts(stats)))
            selected = self.selection.index
            batches: dict = {}  # one framed batch per subscription variant, shared by its clients
            for client in self.clients:
                key = (client.sub, selected if client.sub.words == "selected" else None)
                if key not in batches:
                    messages = self.encoder.step_frames(event, client.sub, selected)
                    batches[key] = ws_frames([*messages, meta] if client.sub.meta else messages)
                if batches[key]:
                    client.push([], t_event, droppable=True, framed=batches[key])
        elif isinstance(event, RunEnd):
            total = self._start.steps if self._start and self._start.run_id == event.run_id else event.steps_done
            end = P.encode_json(P.run_end_message(event))
            for client in self.clients:
                final = self.encoder.final_frame(event, total, client.sub)
                client.push([final, end] if final else [end], t_event)
            self._status_all()

    def _send_all(self, text: str, t_event: float | None = None) -> None:
        t = time.perf_counter() if t_event is None else t_event
        for client in self.clients:
            client.push([text], t)

    def _status(self, client: _Client) -> str:
        fields = dict(self.status_fields())
        fields.setdefault("selected", self.selection.index)
        return P.encode_json(P.status_message(**fields, dropped=client.dropped, subscription=client.sub.to_dict()))

    def _status_all(self) -> None:
        for client in self.clients:
            client.push([self._status(client)], time.perf_counter())

    def _error(self, client: _Client, code: str, message: str, request: str | None = None) -> None:
        log.warning("refused message from websocket client %s: %s", client.peer, message)
        detail = {"request": request} if request else {}
        client.push([P.encode_json(P.error_message(code, message, **detail))], time.perf_counter())

    def _selection_changed(self, index: int) -> None:
        self._post(self._resend_selected)

    def _resend_selected(self) -> None:
        """A new selection shows at once for "selected" subscribers, even between runs."""
        frame = self._last_step
        for client in self.clients:
            if frame is not None and client.sub.words == "selected":
                client.push(self.encoder.step_frames(frame, client.sub, self.selection.index), time.perf_counter(), True)
        self._status_all()

    # ------------------------------------------------------------------ connections

    def _authorized(self, path: str) -> bool:
        if not needs_token(self.host):
            return True
        given = parse_qs(urlsplit(path).query).get("token", [""])[0]
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _process_request(self, connection: ServerConnection, request):
        is_websocket = "websocket" in request.headers.get("Upgrade", "").lower()
        if is_websocket:
            return None  # the handler refuses a bad token with a close reason a client can show
        if not self._authorized(request.path):
            return connection.respond(HTTPStatus.FORBIDDEN, "This bridge needs its token: add ?token=SECRET to the address.\n")
        return self._static(connection, urlsplit(request.path).path)

    def _static(self, connection: ServerConnection, path: str):
        if self.web_root is None or not self.web_root.is_dir():
            return connection.respond(HTTPStatus.NOT_FOUND, f"No viewer is installed; connect a websocket client to {self.url}\n")
        rel = unquote(path).lstrip("/") or "index.html"
        target = (self.web_root / rel).resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.is_relative_to(self.web_root) or not target.is_file():
            return connection.respond(HTTPStatus.NOT_FOUND, f"Not found: {path}\n")
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if target.suffix in (".js", ".mjs"):
            ctype = "text/javascript"
        body = target.read_bytes()
        headers = Headers([("Content-Type", ctype), ("Content-Length", str(len(body))), ("Cache-Control", "no-cache")])
        return Response(200, "OK", headers, body)

    async def _handler(self, ws: ServerConnection) -> None:
        if not self._authorized(ws.request.path):
            log.warning("refused websocket client %s: missing or wrong token", _peer(ws))
            await ws.close(1008, "this bridge needs its token: connect to ws://HOST:PORT/?token=SECRET")
            return
        _bound_send_buffer(ws)
        client = _Client(ws, (self.latencies, self.step_bytes), self.stall_timeout)
        self.clients.add(client)
        log.info("websocket client %s connected (%d connected)", client.peer, len(self.clients))
        status = dict(self.status_fields())
        hello = P.hello_message(server=SERVER_NAME, presets=self.presets, preset=status.get("preset", ""),
                                subscription=client.sub, extra={"state": status.get("state", "idle"),
                                                                "selected": self.selection.index})
        client.push([P.encode_json(hello), self._status(client)], time.perf_counter())
        if self._start is not None:  # joining mid-run: the run's words and size first
            client.push([P.encode_json(P.run_start_message(self._start))], time.perf_counter())
        try:
            async for message in ws:
                self._on_message(client, message)
        except ConnectionClosed:
            pass
        finally:
            if client.drainer is not None:
                client.drainer.cancel()
            self.clients.discard(client)
            log.info("websocket client %s left (%d dropped steps; %d connected)", client.peer, client.dropped, len(self.clients))

    def _on_message(self, client: _Client, message) -> None:
        if isinstance(message, bytes):
            return self._error(client, "bad_message", "binary messages are not accepted; send JSON text control messages (docs/PROTOCOL.md)")
        if len(message) > self.max_control:
            return self._error(client, "too_large", f"a message of {len(message)} characters is over the {self.max_control}-character limit for control messages")
        try:
            msg = P.decode_json(message)
            control = parse_json_control(msg)
        except P.ProtocolError as exc:
            return self._error(client, "bad_message", str(exc))
        except ControlError as exc:
            return self._error(client, exc.code, str(exc), msg.get("type") if isinstance(msg.get("type"), str) else None)
        self.apply(client, control)

    def apply(self, client: _Client, control: Control) -> None:
        try:
            if control.kind == "subscribe":
                client.sub = P.Subscription.from_dict(control.values["subscription"], base=client.sub)
                client.push([self._status(client)], time.perf_counter())
                return
            if control.kind == "status":
                client.push([self._status(client)], time.perf_counter())
                return
            if control.kind == "select":
                self.selection.select(control.values["word"])  # listener re-sends and broadcasts status
                return
            if self.controller is None:
                raise ControlError(f"{control.kind} is not available here", "unknown_type")
            self.controller(control)
        except ControlError as exc:
            return self._error(client, exc.code, str(exc), control.kind)
        except UserError as exc:
            return self._error(client, "invalid_value", str(exc), control.kind)
        except P.ProtocolError as exc:
            return self._error(client, "invalid_value", str(exc), control.kind)
        except Exception as exc:  # a bug in a controller must not end the connection
            log.exception("control %s failed", control.kind)
            return self._error(client, "failed", f"{control.kind} failed: {exc}", control.kind)
        self._status_all()
