"""Websocket sink: binary texture frames and JSON metadata to many clients, plus control in.

The Bus-facing side of five parts (bridge/sinks/ws/):
- :mod:`~bridge.sinks.ws.server` — loop thread, handshake, writing with ``websockets``;
- :mod:`~bridge.sinks.ws.access` — who may connect: token, page origin, client cap;
- :mod:`~bridge.sinks.ws.fanout` — records → per-client batches; newest step wins per client;
- :mod:`~bridge.sinks.ws.incoming` — control messages in, one answer each;
- :mod:`~bridge.sinks.ws.static` — the viewer's files over HTTP on the same port.

Never slowing generation: ``on_*`` only schedule work on the server's loop and return.
"""

from __future__ import annotations

import time

from .. import protocol as P
from ..frames import RunEnd, RunStart, StepFrame
from .selection import Selection
from .ws.fanout import ClientState, FanOut
from .ws.incoming import MAX_CONTROL, Incoming
from .ws.access import MAX_CLIENTS
from .ws.server import STALL_TIMEOUT, WsServer, needs_token
from .ws.static import StaticFiles

SERVER_NAME = "attention-bridge"

__all__ = ["WebSocketSink", "needs_token", "SERVER_NAME"]


class WebSocketSink:
    """The websocket + HTTP server as a Bus sink.

    ``controller(control)`` receives every validated control except subscribe/select/status
    (handled by :mod:`~bridge.sinks.ws.incoming`); it may raise :class:`UserError` to refuse it.  ``status()`` returns the
    server-wide fields of a ``status`` message.  Call :meth:`start` before publishing.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8765, *, token: str = "", web_root=None,
                 selection: Selection | None = None, controller=None, status=None, presets=(),
                 max_control: int = MAX_CONTROL, stall_timeout: float = STALL_TIMEOUT, allow_origin=(),
                 max_clients: int = MAX_CLIENTS, limits=None):
        self.presets = list(presets)
        self.limits = limits or P.LIMITS
        self.fanout = FanOut(selection, status)
        self.selection = self.fanout.selection
        self.incoming = Incoming(self.fanout, controller, max_control)
        self.server = WsServer(host, port, token=token, static=StaticFiles(web_root), on_connect=self._greet,
                               on_message=self.incoming.handle, on_disconnect=self.fanout.leave,
                               stall_timeout=stall_timeout, allow_origin=allow_origin, max_clients=max_clients)
        self.selection.add_listener(lambda index: self.server.call(self.fanout.resend_selected))

    # ------------------------------------------------------------------ lifecycle

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def token(self) -> str:
        return self.server.token

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def http_url(self) -> str:
        """The viewer's address; the page passes its ``?token=`` on to the websocket."""
        return "http" + self.url[2:]

    def start(self) -> "WebSocketSink":
        self.server.start()
        # the port is known once listening; the "no viewer" page is public, so it never shows the token
        self.server.static.hint_url = self.server.public_url + ("?token=SECRET" if self.token else "")
        return self

    def close(self) -> None:
        self.server.close()

    def drain(self, timeout: float = 3.0) -> None:
        """Wait (up to ``timeout``) until every client's queue has gone out (the last run's end)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(c.outbox or c.in_flight for c in list(self.clients)):
            time.sleep(0.02)  # polls the queues until empty or the deadline

    @property
    def alive(self) -> bool:
        """Whether the server's loop thread is running."""
        return self.server._thread is not None and self.server._thread.is_alive()

    # ------------------------------------------------------------------ Bus sink (any thread)

    def on_run_start(self, event: RunStart) -> None:
        self.server.call(self.fanout.publish, event, time.perf_counter())

    def on_step(self, event: StepFrame) -> None:
        self.server.call(self.fanout.publish, event, time.perf_counter())

    def on_run_end(self, event: RunEnd) -> None:
        self.server.call(self.fanout.publish, event, time.perf_counter())

    def broadcast_status(self) -> None:
        """Send every client its status, if it changed since the last one it got (thread-safe)."""
        self.server.call(self.fanout.status_all)

    def broadcast(self, message: dict) -> None:
        self.server.call(self.fanout.send_all, P.encode_json(message))

    # ------------------------------------------------------------------ measurements

    @property
    def clients(self) -> set[ClientState]:
        return self.fanout.clients

    @property
    def dropped(self) -> int:
        return sum(c.dropped for c in self.clients)

    @property
    def latencies(self):
        return self.server.latencies

    @property
    def step_bytes(self):
        return self.server.step_bytes

    def thread_cpu(self) -> float:
        return self.server.thread_cpu()

    # ------------------------------------------------------------------ on the loop

    def _greet(self, client: ClientState) -> None:
        status = dict(self.fanout.status_fields())
        hello = P.hello_message(server=SERVER_NAME, presets=self.presets, preset=status.get("preset", ""),
                                subscription=client.sub, extra={"state": status.get("state", "idle"),
                                                                "selected": self.selection.index},
                                limits=self.limits)
        self.fanout.join(client, hello)
