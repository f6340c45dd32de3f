"""OSC sink: run, step, phase and per-word statistics to one or more UDP targets.

Each event becomes one bundle with the IMMEDIATE timetag.  Numbers are int32/float32 so a
TouchDesigner OSC In CHOP reads them as channels; strings (prompt, words, phase name, errors)
go on their own addresses for an OSC In DAT.  The address space is in docs/PROTOCOL.md §3.
Bundles are built and sent on the sink's own thread (see :class:`ThreadedSink`).
"""

from __future__ import annotations

import socket

import struct

from ..errors import UserError
from ..frames import RunEnd, RunStart, StepFrame, attention_mass
from ..phases import PHASE_NAMES
from ..wordstats import StatsTracker, word_stats
from .mailbox import ThreadedSink
from .selection import Selection

STATUS_CODES = {"completed": 0, "cancelled": 1, "failed": 2}
MAX_DATAGRAM = 65000  # UDP payload limit (with headroom); bigger bundles are split
_INT, _FLOAT = struct.Struct(">i"), struct.Struct(">f")
_BUNDLE_HEAD = b"#bundle\0" + struct.pack(">Q", 1)  # timetag 1 = IMMEDIATELY


def parse_target(text: str) -> tuple[str, int]:
    """``"host:port"`` → (host, port); raises :class:`UserError` naming the bad target."""
    host, sep, port = str(text).strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"OSC target {text!r} must look like host:port, e.g. 127.0.0.1:7000")
    return host.strip("[]"), int(port)


def _osc_string(text: str) -> bytes:
    raw = text.encode("utf-8") + b"\0"
    return raw + b"\0" * (-len(raw) % 4)


def message(address: str, *args) -> bytes:
    """One OSC 1.0 message: ints as int32 ``i``, floats as float32 ``f``, anything else as a
    string ``s``.  Encoded here (not with python-osc's builder) because it runs for every
    word on every step and this is several times faster; python-osc parses it in the tests."""
    tags, payload = [","], []
    for a in args:
        if isinstance(a, (bool, int)):
            tags.append("i")
            payload.append(_INT.pack(int(a)))
        elif isinstance(a, float):
            tags.append("f")
            payload.append(_FLOAT.pack(a))
        else:
            tags.append("s")
            payload.append(_osc_string(str(a)))
    return _osc_string(address) + _osc_string("".join(tags)) + b"".join(payload)


def bundle(messages) -> list[bytes]:
    """Bundles with the IMMEDIATE timetag (1), split so each fits one UDP datagram."""
    out, parts, size = [], [], len(_BUNDLE_HEAD)
    for m in messages:
        if parts and size + 4 + len(m) > MAX_DATAGRAM:
            out.append(_BUNDLE_HEAD + b"".join(parts))
            parts, size = [], len(_BUNDLE_HEAD)
        parts.append(_INT.pack(len(m)) + m)
        size += 4 + len(m)
    if parts:
        out.append(_BUNDLE_HEAD + b"".join(parts))
    return out


def _int32(x: int) -> int:
    return int(x) % 2**31


class OscSink(ThreadedSink):
    """Sends the OSC address space to ``targets`` (list of host:port or (host, port))."""

    name = "osc"

    def __init__(self, targets, prefix: str = "/daam", selection: Selection | None = None):
        self.targets = [parse_target(t) if isinstance(t, str) else (t[0], int(t[1])) for t in targets]
        self.prefix = prefix.rstrip("/")
        self.selection = selection or Selection()
        self.tracker = StatsTracker()
        self._previous = {"self": None, "concepts": None}  # the last step's normalised maps by kind (for "change")
        self.sent = 0
        self.last_step_bytes = 0  # size of the last step's bundles, per target
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._addrs = []
        for host, port in self.targets:
            try:
                self._addrs.append(socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)[0][4])
            except socket.gaierror as exc:
                raise UserError(f"OSC target {host}:{port} cannot be resolved ({exc.strerror})") from None
        super().__init__()
        self.selection.add_listener(lambda index: self.send([self.msg("/selected", index)]))

    def msg(self, address: str, *args):
        """A message on ``prefix + address``."""
        return message(self.prefix + address, *args)

    def send(self, messages) -> int:
        """Send messages as bundle(s) to every target; network errors are logged, not raised.
        Returns the bytes sent per target."""
        size = 0
        for dgram in bundle(messages):
            size += len(dgram)
            for addr in self._addrs:
                try:
                    self._sock.sendto(dgram, addr)
                    self.sent += 1
                except OSError as exc:  # e.g. no route: the show goes on
                    self._log.warning("OSC send to %s:%s failed: %s", *addr[:2], exc)
        return size

    def send_error(self, code: str, text: str, reply_to=None) -> None:
        """``/daam/error s code, s message`` to the targets and, if given, the sender's address."""
        dgram = message(self.prefix + "/error", code, text)
        for addr in {*self._addrs, *([reply_to] if reply_to else [])}:
            try:
                self._sock.sendto(dgram, addr)
            except OSError:
                pass

    def handle(self, event) -> None:
        if isinstance(event, RunStart):
            map_h, map_w = event.map_size
            self.send([
                self.msg("/run/start", event.steps, _int32(event.seed), event.width, event.height, len(event.words), map_h, map_w),
                self.msg("/run/prompt", event.prompt),
                self.msg("/words", *event.words),
                self.msg("/selected", self.selection.start_run(event.run_id, event.words)),
            ])
        elif isinstance(event, StepFrame):
            stats = self.tracker.update(event)
            phase = PHASE_NAMES.index(event.phase) if event.phase in PHASE_NAMES else 0
            msgs = [
                self.msg("/step", event.step, event.total, (event.step + 1) / max(event.total, 1)),
                self.msg("/phase", phase),
                self.msg("/phase/name", event.phase),
                self.msg("/phase/weights", *(float(w) for w in event.phase_weights)),
            ]
            msgs += [self.msg(f"/word/{i}", *(float(v) for v in row)) for i, row in enumerate(stats)]
            msgs += self._labelled_messages(event, "self", [str(r.get("id", "")) for r in event.regions], "/regions", "/region")
            msgs += self._labelled_messages(event, "concepts", list(event.concepts), "/concepts", "/concept")
            self.last_step_bytes = self.send(msgs)
        elif isinstance(event, RunEnd):
            self.send([
                self.msg("/run/end", event.steps_done, STATUS_CODES.get(event.status, 2)),
                self.msg("/run/status", event.status),
            ])

    def _labelled_messages(self, event: StepFrame, kind: str, labels: list, names: str, each: str) -> list:
        """Per label of a kind not labelled by words (query regions, concepts): the word
        statistics of its map (mass: its share), after one message naming the labels."""
        maps = event.kinds.get(kind)
        if maps is None or not labels:
            self._previous[kind] = None
            return []
        previous = self._previous[kind]
        if previous is not None and previous.shape != maps.shape:  # the labels changed: no "change" to report
            previous = None
        stats, self._previous[kind] = word_stats(maps, attention_mass(maps), previous)
        return [self.msg(names, *labels), *(self.msg(f"{each}/{i}", *(float(v) for v in row)) for i, row in enumerate(stats))]

    def close(self) -> None:
        super().close()
        self._sock.close()
