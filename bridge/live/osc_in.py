"""OSC control receiver: UDP datagrams → validated :class:`bridge.control.Control`.

Its own socket loop (rather than python-osc's server) so every malformed datagram — wrong
types, wrong counts, unknown addresses, bytes that are not OSC at all — is caught here,
answered with ``/daam/error`` and logged, and the receiver keeps listening.

An error reply goes back only to a peer the operator knows — loopback, the ``--osc-allow``
hosts, the ``--osc-out`` hosts — and at most a few per second each (:mod:`.ratelimit`), so
the port is no reflector for spoofed datagrams.
"""

from __future__ import annotations

import logging
import socket
import threading

from pythonosc.osc_packet import OscPacket

from ..control import ControlError, parse_osc_control
from ..errors import UserError
from ..wiretext import clip
from .ratelimit import PeerBudget

log = logging.getLogger(__name__)


class OscControlServer:
    """Listens on ``host:port``; ``handler(control)`` applies a control (may raise UserError);
    ``reply(code, message, addr)`` sends an error back.  ``allow``: hosts allowed to send
    (empty: anyone who can reach the port); ``reply_hosts``: more hosts that may be answered
    (the OSC out targets)."""

    def __init__(self, host: str, port: int, handler, reply, prefix: str = "/daam", allow=(), reply_hosts=()):
        self.handler, self.reply, self.prefix = handler, reply, prefix.rstrip("/")
        self.allowed = {_resolve(h) for h in allow}
        self.reply_hosts = self.allowed | {_address(h.strip("[]")) for h in reply_hosts} - {None}
        self.replies = PeerBudget()
        self.unanswered = 0  # refusals not answered: unknown peer or over its budget
        self.received = self.refused = 0
        self._refused_peers: set = set()
        self._sock = _bound(host, port)
        self._sock.settimeout(0.25)
        self.host, self.port = self._sock.getsockname()[:2]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="osc-control", daemon=True)

    def start(self) -> "OscControlServer":
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)
        self._sock.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self._sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            try:
                self.handle_datagram(data, addr)
            except Exception:  # the receiver must outlive any bug in a handler
                log.exception("OSC control from %s:%s failed", *addr[:2])

    def handle_datagram(self, data: bytes, addr) -> None:
        if self.allowed and addr[0] not in self.allowed:
            self.refused += 1
            if addr[0] not in self._refused_peers:  # one line per stranger, not one per packet
                self._refused_peers.add(addr[0])
                log.warning("OSC control from %s refused: not in the allowed peers (%s)", addr[0], ", ".join(sorted(self.allowed)))
            return
        self.received += 1
        try:
            messages = [timed.message for timed in OscPacket(data).messages]
        except Exception as exc:  # python-osc raises ParseError, but also struct/Unicode errors
            return self._refuse("bad_message", f"not a valid OSC packet ({type(exc).__name__}: {exc})", addr)
        for msg in messages:
            try:
                control = parse_osc_control(msg.address, list(msg.params), self.prefix)
                if control is not None:
                    self.handler(control)
            except ControlError as exc:
                self._refuse(exc.code, str(exc), addr)
            except UserError as exc:
                self._refuse("invalid_value", str(exc), addr)

    def _refuse(self, code: str, message: str, addr) -> None:
        log.warning("OSC control from %s:%s refused: %s", addr[0], addr[1], clip(message))
        if self.may_answer(addr[0]) and self.replies.allow(addr[0]):
            self.reply(code, message, addr)
        else:
            self.unanswered += 1

    def may_answer(self, host: str) -> bool:
        return host in self.reply_hosts or _is_loopback(host)


def _bound(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen for OSC control on {host}:{port} ({exc.strerror or exc}); "
                        "choose another --osc-in-port (0 turns OSC control off)") from None
    return sock


def check_osc_port_free(host: str, port: int) -> None:
    """UserError now if OSC control cannot listen on ``host:port`` (before a slow model load)."""
    if port:
        _bound(host, port).close()


def _is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _address(host: str) -> str | None:
    try:
        return socket.gethostbyname(host)
    except OSError:
        return None


def _resolve(host: str) -> str:
    try:
        return socket.gethostbyname(host)
    except OSError:
        raise UserError(f"OSC allowed peer {host!r} cannot be resolved to an address") from None
