"""The network side of the websocket sink: event loop thread, handshake, access, writing.

One asyncio loop on its own thread runs a ``websockets`` server.  Plain HTTP requests on the
same port go to :class:`~bridge.sinks.ws.static.StaticFiles` (the browser viewer); websocket
upgrades are checked by :class:`~bridge.sinks.ws.access.Access` (token, page origin, client
cap; a refusal is an HTTP status and one sentence), then each admitted client gets a
:class:`~bridge.sinks.ws.fanout.ClientState` and a writer task that sends its batches with
``websockets``' own :meth:`send` — so every frame is built by the library.

While a client's socket drains slowly, :meth:`send` waits, the batch stays in flight and the
fan-out skips the client's stale steps; nothing else waits for it.  A client whose batch has
not gone out within ``stall_timeout`` seconds (it reads nothing) is disconnected.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections import deque
from http import HTTPStatus
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from ...errors import UserError
from .access import MAX_CLIENTS, Access, needs_token, token_ok, token_query
from .fanout import ClientState
from .static import StaticFiles, text_response

__all__ = ["WsServer", "needs_token", "token_ok", "MAX_CLIENTS", "STALL_TIMEOUT"]

log = logging.getLogger("bridge.sinks.websocket")

# Incoming messages are control JSON: a few hundred bytes.  The websocket layer accepts up to
# 1 MiB (bigger closes with 1009) so that a merely oversized control gets a readable error.
MAX_INCOMING = 2**20
# Kernel send buffer per client.  Linux autotunes it up to 4 MiB, which is seconds of stale
# frames queued for a slow client; a bounded buffer makes "newest step" hold on the wire too.
# Set on the listening socket: accepted sockets inherit it.
SEND_BUFFER = 256 * 1024
STALL_TIMEOUT = 30.0  # seconds a client may read nothing at all before it is dropped
CLOSE_TIMEOUT = 2.0  # seconds a closing handshake may take before the connection is dropped


ONCE_HEADERS = ("Upgrade", "Origin", "Host")  # headers a request may carry only once


def port_refusal(host: str, port: int, exc: OSError) -> str:
    return f"cannot listen on {host}:{port} ({exc.strerror or exc}); is another bridge running? choose another --port"


def check_port_free(host: str, port: int) -> None:
    """UserError now if ``host:port`` cannot be listened on (before a slow model load; the
    server's own bind still decides)."""
    import socket

    if not port:
        return
    probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no conflict
        probe.bind((host, port))
    except OSError as exc:
        raise UserError(port_refusal(host, port, exc)) from None
    finally:
        probe.close()


class BridgeConnection(ServerConnection):
    """A ``websockets`` server connection that can be cut at once.

    ``close()`` sends a close frame and waits for the socket to drain first, which never
    happens for a client that has stopped reading; websockets 17 has no public abort, so
    this keeps the handle asyncio gives every protocol in ``connection_made``.
    """

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._abort = transport.abort

    def abort(self) -> None:
        """Drop the TCP connection now, without a closing handshake."""
        self._abort()


def _peer_host(ws: ServerConnection) -> str:
    try:
        return str(ws.remote_address[0])
    except Exception:
        return "?"


def _peer(ws: ServerConnection) -> str:
    try:
        host, port = ws.remote_address[:2]
        return f"{host}:{port}"
    except Exception:
        return "?"


async def _thread_time() -> float:
    return time.thread_time()


class WsServer:
    """The server and its thread.

    ``on_connect(client, path)`` is called on the loop when a websocket client is admitted
    (it queues the greeting), ``on_message(client, message)`` for every message received,
    ``on_disconnect(client)`` when it has gone.  :meth:`call` runs a function on the loop
    from any thread.
    """

    def __init__(self, host: str, port: int, *, token: str = "", static: StaticFiles | None = None,
                 on_connect=None, on_message=None, on_disconnect=None, stall_timeout: float = STALL_TIMEOUT,
                 allow_origin=(), max_clients: int = MAX_CLIENTS):
        self.access = Access(host, token, allow_origin, max_clients)
        self.host, self.port, self.token = host, port, token
        self.static = static or StaticFiles(None)
        self.on_connect = on_connect or (lambda client: None)
        self.on_message = on_message or (lambda client, message: None)
        self.on_disconnect = on_disconnect or (lambda client: None)
        self.stall_timeout = stall_timeout
        self.latencies: deque = deque(maxlen=100_000)  # seconds, step record → its last byte handed to the socket
        self.step_bytes: deque = deque(maxlen=100_000)  # bytes per client per step
        self._connections: dict[ClientState, BridgeConnection] = {}
        self._admitted: set[BridgeConnection] = set()  # upgraded or upgrading, until their handler ends
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Future | None = None

    @property
    def url(self) -> str:
        """Where a client connects, the token percent-encoded in it."""
        return self.public_url + token_query(self.token)

    @property
    def public_url(self) -> str:
        """:attr:`url` without the token (safe to show to anyone)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}/"

    # ------------------------------------------------------------------ lifecycle (caller's thread)

    def start(self) -> "WsServer":
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
                raise UserError(port_refusal(self.host, self.port, exc)) from None
            raise exc
        return self

    def close(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread and self._thread.is_alive():
            self._loop.call_soon_threadsafe(lambda: self._stop.done() or self._stop.set_result(None))
            self._thread.join(2 * CLOSE_TIMEOUT + 2)

    def call(self, fn, *args) -> None:
        """Run ``fn(*args)`` on the loop soon; never blocks, a no-op once the loop is gone."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # loop closed while shutting down
                pass

    def thread_cpu(self) -> float:
        """CPU seconds used so far by the loop thread (benchmarks: server cost per step)."""
        if self._loop is None or self._loop.is_closed():
            return 0.0
        return asyncio.run_coroutine_threadsafe(_thread_time(), self._loop).result(5)

    # ------------------------------------------------------------------ on the loop

    async def _serve(self, ready: threading.Event) -> None:
        self._stop = asyncio.get_running_loop().create_future()
        async with serve(self._handler, self.host, self.port, process_request=self._process_request,
                         create_connection=BridgeConnection, max_size=MAX_INCOMING, compression=None,
                         close_timeout=CLOSE_TIMEOUT) as server:
            for sock in server.sockets:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
                except OSError:
                    pass
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            await self._stop
            await self._close_all()

    async def _close_all(self) -> None:
        closing = {}
        for client, ws in list(self._connections.items()):
            if client.in_flight:  # backed up: a close frame would wait behind its data forever
                ws.abort()
            else:
                closing[asyncio.create_task(ws.close(1001, "bridge shutting down"))] = ws
        if closing:  # all at once, bounded: one slow client must not hold up the others
            _, late = await asyncio.wait(closing, timeout=CLOSE_TIMEOUT + 1)
            for task in late:
                closing[task].abort()

    def _process_request(self, connection: BridgeConnection, request):
        for name in ONCE_HEADERS:  # the checks below read one value of each
            if len(request.headers.get_all(name)) > 1:
                return text_response(HTTPStatus.BAD_REQUEST, f"The request repeats its {name} header; send it once.\n")
        if "websocket" not in request.headers.get("Upgrade", "").lower():
            return self._static(request.path)  # the viewer's files are not secret: the token guards the websocket
        self._admitted = {c for c in self._admitted if c.state is not State.CLOSED}  # handshakes that failed
        refusal = self.access.refusal(request.path, request.headers, self.port, len(self._admitted))
        if refusal is not None:
            log.warning("refused a websocket client from %s: %s", _peer_host(connection), refusal.log)
            return text_response(refusal.status, refusal.sentence)
        self._admitted.add(connection)
        return None

    def _static(self, path: str):
        try:
            return self.static.response(urlsplit(path).path)
        except Exception as exc:  # one line, never a traceback, for whatever a request path can still cause
            log.warning("could not answer GET %.100r (%s)", path, exc)
            return text_response(HTTPStatus.INTERNAL_SERVER_ERROR, "The bridge could not answer this request.\n")

    async def _handler(self, ws: BridgeConnection) -> None:
        try:
            await self._serve_client(ws)
        finally:
            self._admitted.discard(ws)

    async def _serve_client(self, ws: BridgeConnection) -> None:
        wake = asyncio.Event()
        client = ClientState(_peer(ws), wake=wake.set)
        self._connections[client] = ws
        writer = asyncio.create_task(self._write(ws, client, wake))
        self.on_connect(client)
        log.info("websocket client %s connected (%d connected)", client.peer, len(self._connections))
        try:
            async for message in ws:
                try:
                    self.on_message(client, message)
                except Exception:  # a bug in handling one message must not end the connection
                    log.exception("message from websocket client %s was not handled", client.peer)
        except ConnectionClosed:
            pass
        finally:
            writer.cancel()
            del self._connections[client]
            self.on_disconnect(client)
            log.info("websocket client %s left (%d dropped steps; %d connected)", client.peer, client.dropped,
                     len(self._connections))

    async def _write(self, ws: BridgeConnection, client: ClientState, wake: asyncio.Event) -> None:
        """Send the client's batches in order, one at a time, each message as one frame."""
        try:
            while True:
                batch = client.take()
                if batch is None:
                    wake.clear()
                    await wake.wait()
                    continue
                waited = asyncio.Event()  # set only if the loop ran while the batch was going out
                asyncio.get_running_loop().call_soon(waited.set)
                try:
                    async with asyncio.timeout(self.stall_timeout):
                        for message in batch.messages:
                            await ws.send(message)  # returns at once unless the socket is backed up
                except TimeoutError:
                    log.warning("websocket client %s read nothing for %g s; closing it", client.peer, self.stall_timeout)
                    ws.abort()
                    return
                finally:
                    client.sent(congested=waited.is_set())
                if batch.droppable:
                    self.latencies.append(time.perf_counter() - batch.t_event)
                    self.step_bytes.append(batch.wire_bytes)
        except ConnectionClosed:
            pass  # the handler sees the close too and forgets the client
