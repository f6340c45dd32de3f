"""Helpers for the live-bridge tests: real sockets on loopback, no fakes."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from contextlib import contextmanager

from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_packet import OscPacket

from bridge import protocol as P
from bridge.presets import defaults


def wait_for(condition, timeout: float = 30.0, poll: float = 0.01) -> bool:
    """Whether ``condition()`` came true within ``timeout`` seconds (asked every ``poll`` s):
    for state that changes on another thread and announces nothing."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


class OscCollector:
    """A UDP listener on 127.0.0.1 that keeps every datagram and its parsed OSC messages."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.datagrams: list[bytes] = []
        self.messages: list[tuple[str, list]] = []
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _loop(self):
        while not self._stop:
            try:
                data, _ = self.sock.recvfrom(65535)
            except (socket.timeout, OSError):
                continue
            msgs = [(t.message.address, list(t.message.params)) for t in OscPacket(data).messages]
            with self._cond:
                self.datagrams.append(data)
                self.messages.extend(msgs)
                self._cond.notify_all()

    def wait_for(self, predicate, timeout: float = 30.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.messages), timeout)

    def addresses(self, address: str) -> list[list]:
        with self._cond:
            return [args for a, args in self.messages if a == address]

    def close(self):
        self._stop = True
        self._thread.join(1)
        self.sock.close()


def is_immediate_bundle(data: bytes) -> bool:
    return OscBundle.dgram_is_bundle(data) and data[8:16] == b"\x00\x00\x00\x00\x00\x00\x00\x01"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def live_values(**overrides) -> dict:
    """Preset values for a test session: tiny model, ephemeral ports, short runs, no autostart.

    ``BRIDGE_TEST_WIRE_PROCESS=1`` runs every session's websocket server in its own process
    (tests/test_wire_process.py runs the websocket tests so)."""
    values = defaults()
    values.update(model="builtin:tiny", device="cpu", port=0, osc_in_port=free_udp_port(), osc_out=[], autostart=False,
                  steps=3, web_root="web", wire_process=os.environ.get("BRIDGE_TEST_WIRE_PROCESS") == "1")
    values.update(overrides)
    return values


@contextmanager
def live_session(engine, **overrides):
    from bridge.live.session import LiveSession

    session = LiveSession(engine, live_values(**overrides), preset="live", progress=False).start()
    try:
        yield session
    finally:
        session.close()


class WsClient:
    """A blocking websocket client that decodes everything it receives, in order."""

    def __init__(self, url: str, **kw):
        from websockets.sync.client import connect

        self.ws = connect(url, max_size=None, **kw)
        self.received: list = []  # Frame or dict

    def send(self, message) -> None:
        self.ws.send(message if isinstance(message, (str, bytes)) else json.dumps(message))

    def recv(self, timeout: float = 30.0):
        msg = P.decode_message(self.ws.recv(timeout))
        self.received.append(msg)
        return msg

    def until(self, predicate, timeout: float = 60.0):
        """Receive until ``predicate(message)``; returns that message."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the expected message did not arrive")
            msg = self.recv(left)
            if predicate(msg):
                return msg

    def json(self, type_: str | None = None) -> list[dict]:
        return [m for m in self.received if isinstance(m, dict) and (type_ is None or m["type"] == type_)]

    def frames(self, name: str | None = None) -> list[P.Frame]:
        return [m for m in self.received if isinstance(m, P.Frame) and (name is None or m.type_name == name)]

    def close(self):
        self.ws.close()


@contextmanager
def greeted_client(session):
    """A websocket client of ``session`` that has had its greeting (hello and its status)."""
    client = WsClient(session.websocket.url)
    try:
        client.until(is_json("status"), 30)
        yield client
    finally:
        client.close()


def is_json(type_: str, **fields):
    return lambda m: isinstance(m, dict) and m.get("type") == type_ and all(m.get(k) == v for k, v in fields.items())


class RawClient:
    """A websocket client that keeps every message exactly as received (bytes or str), read on its own thread."""

    SERVER_INFO = ('"type":"hello"', '"type":"status"')

    def __init__(self, url: str):
        from websockets.sync.client import connect

        self.ws = connect(url, max_size=None)
        self.messages: list = []
        self.ended = threading.Event()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        try:
            for m in self.ws:
                with self._cond:
                    self.messages.append(m)
                    self._cond.notify_all()
                if isinstance(m, str) and '"type":"run_end"' in m:
                    self.ended.set()
        except Exception:
            pass

    def wait(self, predicate, timeout: float = 30.0) -> bool:
        """Whether ``predicate(messages)`` came true within ``timeout`` seconds."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.messages), timeout)

    def greeted(self, timeout: float = 30.0) -> bool:
        """Wait for ``hello`` and the first ``status``: the server has taken this client in."""
        return self.wait(lambda ms: any('"type":"status"' in m for m in ms if isinstance(m, str)), timeout)

    def send(self, msg: dict):
        self.ws.send(json.dumps(msg))

    def run_messages(self) -> list:
        """Everything about the run (frames, run_start, step, run_end): not server hello/status."""
        return [m for m in self.messages if not (isinstance(m, str) and any(s in m for s in self.SERVER_INFO))]

    def close(self):
        self.ws.close()
        self._thread.join(2)


def answer(client: WsClient, message: dict, request_id, timeout: float = 30.0) -> dict:
    """Send a control with an ``id`` and return the reply that echoes it (a status or an error)."""
    client.send({**message, "id": request_id})
    return client.until(lambda m: isinstance(m, dict) and m.get("id") == request_id, timeout)
