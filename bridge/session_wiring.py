"""The wire a session serves over, shared by `serve` (live) and `replay`.

Sinks on the bus, the OSC control receiver, error replies to OSC senders, the status
broadcast, the lines that tell a user where everything is, and an orderly close: one
:class:`Wire`, so a client cannot tell a replay from a live run.  A session brings only its
control handlers (:func:`dispatch`) and its status.  Imports no torch (replay runs without it).
"""

from __future__ import annotations

import time

from .control import ControlError
from .presets import switchable_presets
from .settings import Settings
from .sinks import SinkConfig, Sinks, build_sinks


def sink_config(settings, progress: bool = True, record: bool = True) -> SinkConfig:
    s = Settings.of(settings)
    return SinkConfig(host=s.host, port=s.port, token=s.token, allow_origin=list(s.allow_origin),
                      max_clients=s.max_clients, web_root=s.web_root, wire_process=s.wire_process, osc_out=list(s.osc_out),
                      osc_prefix=s.osc_prefix, spout=s.spout, spout_name=s.spout_name, progress=progress,
                      record=s.record if record else "", keep_runs=s.keep_runs, max_gb=s.max_gb)


def dispatch(handlers: dict, control, refusal: str) -> None:
    """Apply ``control`` with ``handlers[control.kind](values)``; a kind without a handler is
    refused with ``refusal`` (``{kind}`` filled in), sent back to its sender."""
    handler = handlers.get(control.kind)
    if handler is None:
        raise ControlError(refusal.format(kind=control.kind), "unknown_type")
    handler(control.values)


class Wired:
    """A session's wire parts as its own attributes (``session.websocket.url`` …); the session
    sets ``self.wire``."""

    sinks = property(lambda self: self.wire.sinks)
    osc_in = property(lambda self: self.wire.osc_in)
    websocket = property(lambda self: self.wire.websocket)
    selection = property(lambda self: self.wire.selection)


class Wire:
    """Sinks + OSC control in for one session.

    ``control(Control)`` applies a control from any transport (raises UserError to refuse);
    ``status() -> dict`` is the session's status message.  ``record=False`` keeps a replay
    from recording copies of itself.
    """

    def __init__(self, settings, control, status, *, progress: bool = True, record: bool = True, limits=None):
        self.settings = Settings.of(settings)
        self.limits = limits  # sent in hello; None: the table's (a replay runs no model)
        self.control, self.status = control, status
        self.config = sink_config(self.settings, progress, record)
        self.sinks: Sinks | None = None
        self.osc_in = None

    def open(self, bus) -> "Wire":
        """Start the sinks on ``bus`` and the OSC receiver; on failure nothing is left open."""
        from .live.osc_in import OscControlServer

        s = self.settings
        self.sinks = build_sinks(self.config, controller=self.control, status=self.status, presets=switchable_presets(s.preset_dirs), limits=self.limits)
        for sink in self.sinks.all:
            bus.add(sink)
        try:
            if s.osc_in_port:
                out_hosts = [target.rpartition(":")[0] for target in s.osc_out]
                self.osc_in = OscControlServer(s.osc_in_host, s.osc_in_port, self.control, self.osc_reply,
                                               s.osc_prefix, s.osc_allow, out_hosts).start()
        except BaseException:
            self.sinks.close()
            raise
        return self

    # ------------------------------------------------------------------ the sinks

    @property
    def websocket(self):
        return self.sinks.websocket if self.sinks is not None else None

    @property
    def osc(self):
        return self.sinks.osc if self.sinks is not None else None

    @property
    def selection(self):
        return self.sinks.selection

    # ------------------------------------------------------------------ replies and status

    def osc_reply(self, code: str, message: str, addr) -> None:
        """A refused OSC control: the error goes back to the sender."""
        if self.osc is not None:
            self.osc.send_error(code, message, reply_to=addr)

    def send_osc_status(self, state: str, mode: str, preset: str) -> None:
        """The answer to a status control on OSC: /status state mode preset, /selected index."""
        osc = self.osc
        if osc is not None:
            osc.send([osc.msg("/status", state, mode, preset), osc.msg("/selected", self.selection.index)])

    def broadcast_status(self) -> None:
        if self.websocket is not None:
            self.websocket.broadcast_status()

    def report_error(self, code: str, message: str) -> None:
        """An error no single sender caused: every client and every OSC target hears it."""
        from . import protocol as P

        if self.websocket is not None:
            self.websocket.broadcast(P.error_message(code, message))
        if self.osc is not None:
            self.osc.send_error(code, message)

    def describe(self, osc_hint: str) -> list[str]:
        """Where everything is; ``osc_hint`` shows what to send to OSC in, e.g. ``/prompt "…"``."""
        s, ws, lines = self.settings, self.websocket, []
        if ws is not None:
            lines += [f"viewer:     {ws.http_url}", f"websocket:  {ws.url}"]
        if s.osc_out:
            lines.append(f"OSC out:    {', '.join(s.osc_out)} ({s.osc_prefix}/…)")
        if self.osc_in is not None:
            allow = f", allowed: {', '.join(s.osc_allow)}" if s.osc_allow else ""
            lines.append(f"OSC in:     {self.osc_in.host}:{self.osc_in.port} ({s.osc_prefix}{osc_hint}{allow})")
        return lines

    # ------------------------------------------------------------------ closing

    def drain(self, timeout: float = 3.0) -> None:
        """Let the network sinks send what is queued (the last run's end) before they close."""
        if self.sinks is None:
            return
        deadline = time.monotonic() + timeout
        if self.osc is not None and hasattr(self.osc, "flush"):
            self.osc.flush(timeout)
        if self.websocket is not None:
            self.websocket.drain(max(0.0, deadline - time.monotonic()))

    def close(self, drain: bool = False) -> None:
        if self.osc_in is not None:
            self.osc_in.close()
        if self.sinks is not None:
            if drain:
                self.drain()
            self.sinks.close()
