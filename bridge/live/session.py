"""The live bridge: engine + sinks + control in, wired together for `serve`.

    session = LiveSession(engine, values, preset="live").start()
    ...                                   # clients connect, prompts arrive, runs stream out
    session.close()

``values`` are preset values (see :mod:`bridge.presets`) with command-line overrides applied.
Every control — websocket, OSC or a preset switch — goes through :meth:`LiveSession.control`.
"""

from __future__ import annotations

import logging
import threading

from ..bus import Bus
from ..control import Control, ControlError
from ..errors import UserError
from ..phases import PhaseSchedule
from ..presets import PresetError, list_presets, load_preset
from ..sinks import SinkConfig, Sinks, build_sinks
from .osc_in import OscControlServer
from .runner import Playlist, Runner

log = logging.getLogger(__name__)

SETTINGS = ("prompt", "negative_prompt", "seed", "steps", "guidance", "width", "height")
# Preset keys a runtime preset switch applies (server, model and OSC wiring stay as started).
SWITCHABLE = ("mode", *SETTINGS, "map_size", "vae_every", "include_special", "noise", "structure", "detail",
              "blend", "playlist", "pause", "seeds", "loops")


def sink_config(values: dict, progress: bool = True) -> SinkConfig:
    return SinkConfig(host=values["host"], port=values["port"], token=values["token"], web_root=values["web_root"],
                      osc_out=list(values["osc_out"]), osc_prefix=values["osc_prefix"], spout=values["spout"],
                      spout_name=values["spout_name"], progress=progress, record=values["record"],
                      keep_runs=values["keep_runs"], max_gb=values["max_gb"])


def open_wire(values: dict, bus: Bus, config: SinkConfig, control, status, osc_reply) -> tuple[Sinks, OscControlServer | None]:
    """The sinks on ``bus`` and the OSC control receiver: the wire `serve` and `replay` share,
    so a client cannot tell them apart.  On failure nothing is left open."""
    sinks = build_sinks(config, controller=control, status=status, presets=list_presets())
    for sink in sinks.all:
        bus.add(sink)
    try:
        osc_in = None
        if values["osc_in_port"]:
            osc_in = OscControlServer(values["osc_in_host"], values["osc_in_port"], control, osc_reply,
                                      values["osc_prefix"], values["osc_allow"]).start()
    except BaseException:
        sinks.close()
        raise
    return sinks, osc_in


class LiveSession:
    def __init__(self, engine, values: dict, preset: str = "live", progress: bool = True):
        self.engine = engine
        self.values = dict(values)
        self.preset = preset
        self.progress = progress
        self.settings = {k: values[k] for k in SETTINGS}
        self.sinks: Sinks | None = None
        self.osc_in: OscControlServer | None = None
        self.bus = Bus([self])  # first sink: knows the run before any client hears of it
        self.current_run = None
        self.runner = Runner(engine, self.bus, self.make_request, on_error=self.report_error, on_state=self._state_changed)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "LiveSession":
        v = self.values
        self.sinks, self.osc_in = open_wire(v, self.bus, sink_config(v, self.progress), self.control, self.status,
                                            self._osc_reply)
        self._apply_mode(v)
        self.runner.start()
        if v["mode"] == "vj" and v["autostart"]:
            self.runner.submit(self.make_request())
        return self

    def close(self) -> None:
        self.runner.stop()
        if self.osc_in is not None:
            self.osc_in.close()
        if self.sinks is not None:
            self.sinks.close()

    @property
    def websocket(self):
        return self.sinks.websocket if self.sinks else None

    @property
    def selection(self):
        return self.sinks.selection

    def on_run_start(self, start) -> None:
        self.current_run = start
        if self.sinks is not None:
            self.selection.set_words(start.words)  # so "select apple" works from the first step

    # ------------------------------------------------------------------ requests

    def make_request(self, prompt: str | None = None, seed: int | None = None, settings: dict | None = None):
        """A validated GenerationRequest from the current settings (InvalidRequest if not valid)."""
        from ..engine import GenerationRequest

        s = dict(settings or self.settings)
        v = self.values
        req = GenerationRequest(
            prompt=prompt if prompt is not None else s["prompt"], negative_prompt=s["negative_prompt"],
            seed=seed if seed is not None else s["seed"], steps=s["steps"], guidance=s["guidance"],
            width=s["width"] or None, height=s["height"] or None,
            phases=PhaseSchedule(v["noise"], v["structure"], v["detail"], v["blend"]),
            map_size=v["map_size"] or None, vae_every=v["vae_every"], include_special=v["include_special"],
        )
        return self.engine.validate(req)

    # ------------------------------------------------------------------ control

    def control(self, control: Control) -> None:
        """Apply one validated control; raises UserError (sent back to the sender) to refuse it."""
        kind, values = control.kind, control.values
        log.info("control: %s %s", kind, values if kind != "prompt" else values.get("prompt", "")[:60])
        if kind in ("prompt", "set"):
            with self._lock:
                settings = {**self.settings, **values}
                request = self.make_request(settings=settings)  # refuse before changing anything
                self.settings = settings
            if kind == "prompt":
                self.runner.submit(request)
        elif kind == "select":
            self.selection.select(values["word"])
        elif kind == "pause":
            self.runner.pause()
        elif kind == "resume":
            self.runner.resume()
        elif kind == "cancel":
            self.runner.cancel()
        elif kind == "next":
            self.runner.next()
        elif kind == "preset":
            self.switch_preset(values["name"])
        elif kind == "status":
            self._osc_status()
        elif kind == "speed":
            raise ControlError("speed applies to replayed recordings only; the live bridge runs as fast as the model", "unknown_type")
        else:
            raise ControlError(f"{kind} is not a control of the live bridge", "unknown_type")
        if self.websocket is not None:
            self.websocket.broadcast_status()

    def switch_preset(self, name: str) -> None:
        try:
            preset = load_preset(name)
        except PresetError as exc:
            raise ControlError(str(exc), "unknown_preset") from None
        with self._lock:
            for key in SWITCHABLE:
                self.values[key] = preset.values[key]
            self.settings = {k: self.values[k] for k in SETTINGS}
            self.preset = preset.name
        self._apply_mode(self.values)
        log.info("preset switched to %s (%s mode)", preset.name, self.values["mode"])

    def _apply_mode(self, v: dict) -> None:
        playlist = None
        if v["mode"] == "installation":
            playlist = Playlist(list(v["playlist"]), v["seeds"], v["seed"], v["loops"], v["pause"])
        self.runner.set_mode(v["mode"], playlist)

    # ------------------------------------------------------------------ status and errors

    def status(self) -> dict:
        r = self.runner
        fields = {"state": r.state, "mode": r.mode, "preset": self.preset, "run_id": self.current_run.run_id if self.current_run else "",
                  "settings": dict(self.settings)}
        if r.playlist is not None:
            fields["playlist"] = {"position": r.playlist.position, "length": len(r.playlist.prompts),
                                  "loops_done": r.playlist.loops_done}
        if self.sinks is not None and self.sinks.recorder is not None:
            fields["recording"] = self.sinks.recorder.status()
        return fields

    def report_error(self, code: str, message: str) -> None:
        """A run that was refused or failed: every client and every OSC target hears it."""
        from .. import protocol as P

        if self.websocket is not None:
            self.websocket.broadcast(P.error_message(code, message))
        if self.sinks is not None and self.sinks.osc is not None:
            self.sinks.osc.send_error(code, message)

    def _osc_reply(self, code: str, message: str, addr) -> None:
        if self.sinks is not None and self.sinks.osc is not None:
            self.sinks.osc.send_error(code, message, reply_to=addr)

    def _osc_status(self) -> None:
        if self.sinks is not None and self.sinks.osc is not None:
            osc = self.sinks.osc
            osc.send([osc.msg("/status", self.runner.state, self.runner.mode, self.preset),
                      osc.msg("/selected", self.selection.index)])

    def _state_changed(self) -> None:
        if self.websocket is not None:
            self.websocket.broadcast_status()


def describe(session: LiveSession) -> list[str]:
    """Lines telling a user where everything is."""
    v, ws = session.values, session.websocket
    lines = []
    if ws is not None:
        lines.append(f"viewer:     {ws.http_url}")
        lines.append(f"websocket:  {ws.url}")
    if v["osc_out"]:
        lines.append(f"OSC out:    {', '.join(v['osc_out'])} ({v['osc_prefix']}/…)")
    if session.osc_in is not None:
        allow = f", allowed: {', '.join(v['osc_allow'])}" if v["osc_allow"] else ""
        lines.append(f"OSC in:     {session.osc_in.host}:{session.osc_in.port} ({v['osc_prefix']}/prompt \"…\"{allow})")
    lines.append(f"mode:       {v['mode']} (preset {session.preset})")
    return lines
