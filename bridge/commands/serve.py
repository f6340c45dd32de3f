"""`serve`: the live bridge (the default command)."""

from __future__ import annotations

import logging
import signal
import threading

from ..presets import add_preset_arguments, apply_overrides, load_preset, presets_epilog

log = logging.getLogger(__name__)

HELP = "live bridge: stream attention maps over websocket/OSC, take prompts from OSC/websocket"

DESCRIPTION = """\
Start the live bridge: load the model, open a websocket + HTTP server (the browser viewer)
and OSC out/in, then generate for every prompt that arrives (VJ mode) or loop a playlist
unattended (installation mode). Every step streams per-word heat maps, the preview image and
phase metadata (docs/PROTOCOL.md).

Settings come from a preset (presets/*.toml); every preset value has a flag below that
overrides it. Send a prompt with OSC  /daam/prompt "a cat"  to 127.0.0.1:7001, or type it in
the viewer.
"""


def _epilog() -> str:
    return presets_epilog() + """

examples:
  python run_bridge.py                                   VJ mode, built-in model, preset "live"
  python run_bridge.py --preset installation --pause 20  loop the installation playlist
  python run_bridge.py --model stable-diffusion-v1-5/stable-diffusion-v1-5 --steps 25
  python run_bridge.py --osc-out 127.0.0.1:7000 --osc-out 10.0.0.7:9000   two OSC targets
  python run_bridge.py --host 0.0.0.0 --token s3cret     reachable from the network (token required)
"""


EPILOG = _epilog()


def add_arguments(parser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no progress bar per run")
    parser.add_argument("--max-runs", type=int, default=0, metavar="N",
                        help="stop after N finished runs (0: run until Ctrl-C); for scripts and tests")
    add_preset_arguments(parser, sections=("", "model", "generation", "phases", "server", "osc", "spout", "installation"))


def run(args) -> int:
    from ..engine import Engine
    from ..errors import UserError
    from ..live.session import LiveSession
    from ..settings import Settings
    from ..sinks.osc import parse_target
    from ..sinks.websocket import needs_token

    preset = load_preset(args.preset)
    s = Settings.of(apply_overrides(preset.values, args))
    log.info("preset %s (%s): model %s", preset.name, preset.description, s.model)
    for target in s.osc_out:  # a typo should not cost a model load first
        parse_target(target)
    if needs_token(s.host) and not s.token:
        raise UserError(f"listening on {s.host} (not 127.0.0.1) needs a shared token: add --token SECRET")
    if s.osc_in_port and needs_token(s.osc_in_host) and not s.osc_allow:
        log.warning("OSC control listens on %s with no --osc-allow list: anyone who reaches port %d can send prompts",
                    s.osc_in_host, s.osc_in_port)
    from ..live.osc_in import check_osc_port_free
    from ..sinks.ws.server import check_port_free

    check_port_free(s.host, s.port)  # a port in use fails in a second, not after the model load
    check_osc_port_free(s.osc_in_host, s.osc_in_port)
    engine = Engine.load(s.model, device=s.device, dtype=s.dtype, progress=not args.no_progress, threads=s.threads)
    if s.max_latent:
        engine.max_latent = s.max_latent
    session = LiveSession(engine, s, preset=preset.name, progress=not args.no_progress)
    session.start()
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        for line in session.describe():
            print(line, flush=True)
        limit = args.max_runs
        while not stop.wait(0.2):
            if limit and session.runner.runs_done >= limit:
                break
            runner = session.runner
            if runner.mode == "installation" and runner.playlist and runner.playlist.finished and runner.state == "idle":
                log.info("playlist finished (%d loops)", runner.playlist.loops)
                break
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        print("stopping…", flush=True)
        session.close()
    return 0
