"""`run_bridge.py replay RUN`: stream saved runs over the live bridge's wire, without torch."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from ..errors import UserError
from ..session_wiring import Wired

log = logging.getLogger("bridge.replay")

HELP = "stream saved runs over websocket/OSC/Spout exactly as the live bridge did (no GPU, no torch)"
DESCRIPTION = """\
Play recordings (made by `render` or `serve --record`) over the same wire as the live
bridge: the same websocket + HTTP viewer, OSC and Spout sinks, the same messages in the same
order, each step at its original time (scaled by --speed).  TouchDesigner and the browser
cannot tell a replay from a live run.  Runs on a show machine without a GPU: replay never
imports torch or diffusers.

RUN is one recording folder, or a folder of recordings played as a playlist in name order
(--shuffle for random order, --loop to start over).  With --loop the folder is read again
before every pass: runs recorded into it meanwhile (`serve --record`) join the show; one still
being written waits until it is done.  A recording cut short (the run was
killed) plays up to its last saved step and ends as cancelled, with a warning.

Control while playing, over websocket JSON or OSC (to --osc-in-port, default 7001):
  pause / resume     {"type":"pause"}   /daam/pause     hold the current step
  next               {"type":"next"}    /daam/next      end this run now, play the next
  speed              {"type":"speed","speed":2}  /daam/speed 2.0   change the speed factor
  select             {"type":"select","word":"star"}  /daam/select star
"""
EPILOG = """\
examples:
  python run_bridge.py replay runs/star                       play once at the original speed
  python run_bridge.py replay runs/star --loop --speed 0.5    loop at half speed
  python run_bridge.py replay runs --loop --shuffle            a folder of runs as a playlist
  python run_bridge.py replay --preset showcase                the show machine preset
  python run_bridge.py replay runs/star --port 9000 --osc-out 10.0.0.7:7000

Without --preset the server and OSC settings are the live preset's, and a replay plays once.
"""

SECTIONS = ("replay", "server", "osc", "spout")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..presets import add_preset_arguments

    p.add_argument("run", nargs="?", default=None,
                   help="a recording folder or a folder of recordings (default: the preset's [replay] recordings)")
    p.add_argument("--gap", type=float, default=1.0, help="seconds between runs of a playlist or loop (default: 1)")
    p.add_argument("--paused", action="store_true",
                   help="start paused: the first run's start goes out, its steps wait for a resume control")
    p.add_argument("--no-progress", action="store_true", help="no progress bar per run")
    add_preset_arguments(p, sections=SECTIONS)
    p.set_defaults(preset=None)  # no --preset: live server settings, replay once (see run_values)


def run_values(args):
    """Preset values with the command line on top (typed); without --preset a replay plays once."""
    from ..presets import DEFAULT_PRESET, apply_overrides, load_preset
    from ..settings import Settings

    preset = load_preset(args.preset or DEFAULT_PRESET)
    values = dict(preset.values)
    if args.preset is None:  # the live preset knows nothing of replay: plain defaults
        values.update(loop=False, shuffle=False, speed=1.0)
    values = apply_overrides(values, args)
    if args.run:
        values["recordings"] = args.run
    if not values["recordings"]:
        raise UserError("give a recording folder to replay, e.g. `replay runs/star` (or a preset with [replay] recordings)")
    if args.gap < 0:
        raise UserError(f"--gap must be ≥ 0 seconds, got {args.gap}")
    return Settings.of(values)


REFUSAL = ("{kind} is not available while replaying recordings; "
           "replay takes pause, resume, next, speed and select")


class ReplaySession(Wired):
    """Player + the live bridge's wire (sinks, OSC control in), as the live session has it."""

    def __init__(self, values, *, gap: float = 1.0, progress: bool = True, paused: bool = False, preset: str = ""):
        from ..replay import playlist_source
        from ..session_wiring import Wire
        from ..settings import Settings

        self.values = Settings.of(values)
        self.source = playlist_source(self.values.recordings)
        self.recordings = self.source()
        self.gap, self.progress, self.paused, self.preset = gap, progress, paused, preset
        self.player = None
        self.wire = Wire(self.values, self.control, self.status, progress=progress, record=False)  # no copies of itself
        self.handlers = {
            "pause": lambda v: self.player.pause(), "resume": lambda v: self.player.resume(),
            "next": lambda v: self.player.next(), "cancel": lambda v: self.player.next(),
            "speed": lambda v: self.player.set_speed(v["speed"]),
            "select": lambda v: self.wire.selection.select(v["word"]),
            "status": lambda v: self.wire.send_osc_status(self.player.status().state, "replay", self.preset),
        }

    def start(self) -> "ReplaySession":
        from ..bus import Bus
        from ..replay import Player

        v = self.values
        self.bus = Bus()
        self.player = Player(self.recordings, self.bus, speed=v.speed, loop=v.loop, shuffle=v.shuffle,
                             gap=self.gap, paused=self.paused, on_change=self._changed,
                             refresh=self.source if v.loop else None)
        self.wire.open(self.bus)
        return self

    def play(self) -> int:
        return self.player.play()

    def close(self) -> None:
        if self.player is not None:
            self.player.stop()
        self.wire.close(drain=True)

    # -- control and status ---------------------------------------------------------------
    def control(self, control) -> None:
        """Apply one validated control (websocket or OSC); UserError refuses it."""
        from ..session_wiring import dispatch

        log.info("control: %s %s", control.kind, control.values or "")
        dispatch(self.handlers, control, REFUSAL)
        self.wire.broadcast_status()

    def status(self) -> dict:
        s = self.player.status() if self.player is not None else None
        if s is None:
            return {"state": "idle", "mode": "replay"}
        return {"state": s.state, "mode": "replay", "preset": self.preset, "run_id": s.run_id,
                "replay": {"speed": s.to_dict()["speed"], "step": s.step, "total": s.total},
                "playlist": {"position": s.entry, "length": s.entries, "loops_done": s.loops}}

    def _changed(self, _status) -> None:
        self.wire.broadcast_status()

    def describe(self) -> list[str]:
        v = self.values
        speed = "max" if self.player.speed == float("inf") else f"{self.player.speed:g}×"
        return [*self.wire.describe("/pause, /next, /speed …"),
                f"replay:     {len(self.recordings)} recording(s) from {v.recordings}, speed {speed}"
                f"{', loop' if v.loop else ''}{', shuffle' if v.shuffle else ''}"]


def run(args) -> int:
    values = run_values(args)
    session = ReplaySession(values, gap=args.gap, progress=not args.no_progress, paused=args.paused,
                            preset=args.preset or "").start()
    stop = threading.Event()

    def on_term(*_):
        stop.set()
        session.player.stop()

    previous = signal.signal(signal.SIGTERM, on_term) if threading.current_thread() is threading.main_thread() else None
    try:
        for line in session.describe():
            print(line, flush=True)
        if args.paused:
            print("paused:     send resume (websocket {\"type\":\"resume\"} or OSC /daam/resume) to start", flush=True)
        played = session.play()
        log.info("replay finished: %d run(s) played", played)
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        session.close()
    return 0
