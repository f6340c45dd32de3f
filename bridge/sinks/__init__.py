"""Sinks: where run events go (websocket, OSC, Spout, progress bar, recordings).

:func:`build_sinks` makes the set a config asks for; ``serve`` and ``replay`` both use it, so
both put the same bytes on the same wires.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .selection import Selection


@dataclass
class SinkConfig:
    """What to send where.  ``port=None`` turns the websocket off; an empty ``osc_out`` turns OSC off."""

    host: str = "127.0.0.1"
    port: int | None = 8765
    token: str = ""
    allow_origin: list = field(default_factory=list)  # web page origins besides the viewer's own
    max_clients: int = 32
    web_root: str | None = "web"
    wire_process: bool = False  # the websocket server in its own process (bridge/sinks/wire_process.py)
    osc_out: list = field(default_factory=lambda: ["127.0.0.1:7000"])
    osc_prefix: str = "/daam"
    spout: bool = False
    spout_name: str = "daam"
    progress: bool = True
    record: str = ""  # a folder: every run is recorded into its own subfolder
    keep_runs: int = 0  # retention of that folder: at most this many runs (0: any number)
    max_gb: float = 0.0  # and at most this many gigabytes of them (0: any size)


@dataclass
class Sinks:
    """The built sinks; ``all`` is what goes on the Bus."""

    all: list
    selection: Selection
    websocket: object = None
    osc: object = None
    spout: object = None
    recorder: object = None  # RecordEveryRun, when recording

    def close(self) -> None:
        for sink in reversed(self.all):
            close = getattr(sink, "close", None)
            if close is not None:
                close()


def build_sinks(config: SinkConfig, *, selection: Selection | None = None, controller=None, status=None,
                presets=(), limits=None) -> Sinks:
    """Create (and start) the sinks ``config`` asks for.

    ``controller``/``status`` are handed to the websocket sink (see
    :class:`bridge.sinks.websocket.WebSocketSink`).  Raises :class:`bridge.errors.UserError` for a
    bad target or a port in use; sinks created before the failure are closed.
    """
    selection = selection or Selection()
    built = Sinks([], selection)
    try:
        if config.osc_out:
            from .osc import OscSink

            built.osc = OscSink(config.osc_out, config.osc_prefix, selection)
            built.all.append(built.osc)
        if config.spout:
            from .spout import make_spout_sink

            built.spout = make_spout_sink(config.spout_name, selection)
            if built.spout is not None:
                built.all.append(built.spout)
        if config.record:
            from ..recording.every_run import RecordEveryRun
            from ..recording.retention import Retention

            retention = Retention(keep_runs=config.keep_runs, max_bytes=int(config.max_gb * 1e9))
            built.recorder = RecordEveryRun(config.record, retention)
            built.all.append(built.recorder)
        if config.progress:
            from .progress import ProgressSink

            built.all.append(ProgressSink())
        if config.port is not None:
            if config.wire_process:
                from .wire_process import WireProcessSink as sink_class
            else:
                from .websocket import WebSocketSink as sink_class

            built.websocket = sink_class(config.host, config.port, token=config.token, web_root=config.web_root,
                                         selection=selection, controller=controller, status=status,
                                         presets=list(presets), allow_origin=list(config.allow_origin),
                                         max_clients=config.max_clients, limits=limits).start()
            built.all.append(built.websocket)
    except BaseException:
        built.close()
        raise
    return built
