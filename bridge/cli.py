"""Command line: `python run_bridge.py [COMMAND] ...`.

Each command lives in ``bridge/commands/<name>.py`` with ``HELP``, ``add_arguments(parser)``
and ``run(args) -> int``.  They are imported only when chosen, so `replay` never pulls in
torch.  With no command, `serve` runs (the live bridge).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .errors import UserError

COMMANDS = ("serve", "render", "replay", "timelapse", "export")

DESCRIPTION = """\
Attention bridge: run a text-to-image diffusion model step by step, capture its
cross-attention per word (DAAM), and stream heat maps, previews and phase metadata to
TouchDesigner and a browser; record runs, replay them, render timelapses.

With no command the live bridge starts (same as `serve`) on the built-in offline model.
"""

EPILOG = """\
examples:
  python run_bridge.py                                 live bridge, built-in model, preset "live"
  python run_bridge.py render --prompt "a yellow star and a green circle" --steps 20 --seed 7 --out runs/star
  python run_bridge.py replay runs/star --loop        stream a saved run (no GPU, no torch)
  python run_bridge.py timelapse runs/star -o star.mp4
  python run_bridge.py export runs/star --what maps,overlays,masks,curves

`python run_bridge.py COMMAND --help` explains each command.
"""


def _load(name: str):
    return importlib.import_module(f"bridge.commands.{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_bridge.py", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = _load(name)
        except ImportError as exc:  # a command whose optional dependency is missing stays listed
            sub.add_parser(name, help=f"(unavailable: {exc})")
            continue
        p = sub.add_parser(
            name, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP),
            epilog=getattr(module, "EPILOG", None), formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
        module.add_arguments(p)
        p.set_defaults(_module=module, _parser=p)
    return parser


def unknown_arguments(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    """The complaint about arguments a command does not take, naming the nearest flag it has."""
    import difflib

    flags = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    message = f"unrecognized arguments: {' '.join(extras)}"
    first = next((e.split("=")[0] for e in extras if e.startswith("--")), None)
    close = difflib.get_close_matches(first, flags, n=1, cutoff=0.75) if first else []
    return message + (f" (did you mean {close[0]}?)" if close else "")


def configure_logging(verbose: bool = False, repeat_interval: float | None = None) -> None:
    """Log to stderr with times; a message repeated within seconds is collapsed into a count
    (bridge/logrepeat.py), so no flood of one line can fill the disk of a machine left running."""
    from .logrepeat import INTERVAL, RepeatFilter, install

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S",
    )
    for handler in logging.getLogger().handlers:
        # only the console handler basicConfig made (a host program's or test runner's own
        # handlers are theirs), and only once however often this runs
        if type(handler) is logging.StreamHandler and not any(isinstance(f, RepeatFilter) for f in handler.filters):
            install(handler, INTERVAL if repeat_interval is None else repeat_interval)
    if not verbose:  # one line per HTTP request and connection drowns the bridge's own log
        logging.getLogger("websockets").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "-v", "--verbose")):
        argv = ["serve", *argv]  # no command: the live bridge
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:  # the command's own usage, not the top level's: it is the command that was mistyped
        (getattr(args, "_parser", None) or parser).error(unknown_arguments(getattr(args, "_parser", None) or parser, extras))
    if getattr(args, "_module", None) is None:
        parser.print_help()
        return 2
    configure_logging(args.verbose)
    try:
        return int(args._module.run(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped.", file=sys.stderr)
        return 130
