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
from ..presets import PresetError, load_named_preset
from ..session_wiring import Wire, Wired, dispatch
from ..concepts import parse_concepts
from ..settings import Settings
from ..wiretext import clip
from .runner import Playlist, Runner

log = logging.getLogger(__name__)

SETTINGS = ("prompt", "negative_prompt", "seed", "steps", "guidance", "width", "height")
# Preset keys a runtime preset switch applies (server, model and OSC wiring stay as started).
SWITCHABLE = ("mode", *SETTINGS, "map_size", "vae_every", "preview", "include_special", "noise", "structure", "detail",
              "blend", "playlist", "pause", "seeds", "loops", "regions", "concepts")


class LiveSession(Wired):
    def __init__(self, engine, values, preset: str = "live", progress: bool = True):
        self.engine = engine
        self.values = Settings.of(values)
        self.preset = preset
        self.settings = {k: getattr(self.values, k) for k in SETTINGS}  # what the next run uses; controls change it
        self.wire = Wire(self.values, self.control, self.status, progress=progress, limits=getattr(engine, "limits", None))
        self.bus = Bus([self])  # first sink: knows the run before any client hears of it
        self.current_run = None
        self.regions = self.values.query_regions()  # self-attention query regions: a run follows them from its next step
        self.concepts = parse_concepts(self.values.concepts)  # concept maps: a run follows them from its next step
        self.runner = Runner(engine, self.bus, self.make_request, on_error=self.wire.report_error,
                             on_state=self.wire.broadcast_status, regions=lambda: self.regions,
                             concepts=lambda: self.concepts)
        self._lock = threading.Lock()
        self.handlers = {
            "prompt": self._prompt, "set": self._set, "select": lambda v: self.selection.select(v["word"]),
            "pause": lambda v: self.runner.pause(), "resume": lambda v: self.runner.resume(),
            "cancel": lambda v: self.runner.cancel(), "next": lambda v: self.runner.next(),
            "preset": lambda v: self.switch_preset(v["name"]), "status": lambda v: self._osc_status(),
            "speed": self._speed, "regions": self._regions, "concepts": self._concepts,
        }

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "LiveSession":
        self.wire.open(self.bus)
        self._apply_mode(self.values)
        self.runner.start()
        if self.values.mode == "vj" and self.values.autostart:
            self.runner.submit(self.make_request())
        return self

    def close(self) -> None:
        self.runner.stop()
        self.wire.close()

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
            width=s["width"] or None, height=s["height"] or None, phases=v.phases(),
            map_size=v.map_size or None, vae_every=v.vae_every, preview=v.preview, include_special=v.include_special,
            self_grid=v.self_grid, concepts=self.concepts,
        )
        return self.engine.validate(req)

    # ------------------------------------------------------------------ control

    def control(self, control: Control) -> None:
        """Apply one validated control; raises UserError (sent back to the sender) to refuse it."""
        kind, values = control.kind, control.values
        log.info("control: %s %s", kind, clip(str(values) if kind != "prompt" else values.get("prompt", ""), 120))
        dispatch(self.handlers, control, "{kind} is not a control of the live bridge")
        self.wire.broadcast_status()

    def _set(self, values: dict):
        with self._lock:
            settings = {**self.settings, **values}
            request = self.make_request(settings=settings)  # refuse before changing anything
            self.settings = settings
        return request

    def _prompt(self, values: dict) -> None:
        self.runner.submit(self._set(values))

    def _regions(self, values: dict) -> None:
        regions = values["regions"]
        if regions:
            request = self.make_request()  # the size the next run draws at
            if not self.engine.family.has_region_maps:
                raise ControlError(f"self-attention maps are not available for {self.engine.family.name} models yet")
            for region in regions:
                region.check_inside(request.width, request.height)
        self.regions = regions
        log.info("self-attention regions: %s", ", ".join(f"{r.id} {r.shape}" for r in regions) or "none")

    def _concepts(self, values: dict) -> None:
        concepts = values["concepts"]
        if concepts and not self.engine.family.has_concept_maps:
            raise ControlError(f"concept maps are not available for {self.engine.family.name} models yet")
        self.concepts = concepts
        log.info("concepts: %s", ", ".join(concepts) or "none")

    def _speed(self, values: dict) -> None:
        raise ControlError("speed applies to replayed recordings only; the live bridge runs as fast as the model", "unknown_type")

    def switch_preset(self, name: str) -> None:
        try:
            preset = load_named_preset(name, self.values.preset_dirs)
        except PresetError as exc:
            raise ControlError(str(exc), "unknown_preset") from None
        with self._lock:
            self.values = self.values.replace(**{key: preset.values[key] for key in SWITCHABLE})
            self.settings = {k: getattr(self.values, k) for k in SETTINGS}
            self.regions = self.values.query_regions()
            self.concepts = parse_concepts(self.values.concepts)
            self.preset = preset.name
        self._apply_mode(self.values)
        log.info("preset switched to %s (%s mode)", preset.name, self.values.mode)

    def _apply_mode(self, v: Settings) -> None:
        playlist = None
        if v.mode == "installation":
            playlist = Playlist(list(v.playlist), v.seeds, v.seed, v.loops, v.pause)
        self.runner.set_mode(v.mode, playlist)

    # ------------------------------------------------------------------ status and errors

    def status(self) -> dict:
        r = self.runner
        fields = {"state": r.state, "mode": r.mode, "preset": self.preset, "run_id": self.current_run.run_id if self.current_run else "",
                  "settings": dict(self.settings), "regions": [region.to_dict() for region in self.regions],
                  "concepts": list(self.concepts)}
        if r.playlist is not None:
            fields["playlist"] = {"position": r.playlist.position, "length": len(r.playlist.prompts),
                                  "loops_done": r.playlist.loops_done}
        if self.sinks is not None and self.sinks.recorder is not None:
            fields["recording"] = self.sinks.recorder.status()
        return fields

    def report_error(self, code: str, message: str) -> None:
        """A run that was refused or failed: every client and every OSC target hears it."""
        self.wire.report_error(code, message)

    def _osc_status(self) -> None:
        self.wire.send_osc_status(self.runner.state, self.runner.mode, self.preset)

    def describe(self) -> list[str]:
        """Lines telling a user where everything is."""
        return [*self.wire.describe('/prompt "…"'), f"mode:       {self.values.mode} (preset {self.preset})"]


def describe(session: LiveSession) -> list[str]:
    return session.describe()
