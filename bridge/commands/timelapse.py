"""`run_bridge.py timelapse RUN -o OUT.mp4`: render a recorded run as a video."""

from __future__ import annotations

import argparse
import logging

from .. import mapkinds
from ..recording import RecordingError
from ..regions import from_cli_text, parse_list
from ..errors import UserError
from ..timelapse import LAYOUTS, TimelapseOptions, map_kinds, render_timelapse
from ..timelapse.colormaps import COLORMAPS

log = logging.getLogger("bridge.timelapse")

HELP = "render a recorded run as an MP4 or GIF timelapse (no torch needed)"
DESCRIPTION = """\
Render a recording (made by `render` or `serve --record`) as a video: each step's preview
with the chosen words' heat maps overlaid, a caption with the prompt, step and phase, and a
timeline of each word's attention mass across the steps.  The final image stays on screen for
--hold seconds.  A truncated recording (the run was killed) renders up to its last step.

layouts:
""" + "".join(f"  {row.name:<10} {row.help}\n" for row in LAYOUTS.values())
EPILOG = """\
examples:
  python run_bridge.py timelapse runs/star -o star.mp4          the particle morph of the focus word
  python run_bridge.py timelapse runs/star -o heat.mp4 --layout single
  python run_bridge.py timelapse runs/star -o star.gif --layout grid --size 192 --fps 6
  python run_bridge.py timelapse runs/star -o side.mp4 --layout side --words star,circle
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="recording folder (contains manifest.json)")
    p.add_argument("-o", "--out", required=True, help="output video: .mp4 (H.264) or .gif")
    p.add_argument("--layout", choices=LAYOUTS, default="particles",
                   help="frame arrangement (default: particles, the morph of the focus word's attention)")
    p.add_argument("--words", default="", help="comma-separated words (or 0-based word indices) to show")
    p.add_argument("--colormap", choices=COLORMAPS, default="inferno", help="heat-map colours (default: inferno)")
    p.add_argument("--opacity", type=float, default=0.6, help="overlay opacity at full attention, 0..1 (default: 0.6)")
    p.add_argument("--map", dest="map_kind", choices=map_kinds() + ("auto",), default="auto",
                   help="; ".join(f"{name}: {mapkinds.by_cli_name(name).description}" for name in map_kinds())
                        + " (default auto: the layout's own, step for overlays, cumulative for particles)")
    p.add_argument("--size", type=int, default=384, help="pixels on the long side of one image tile (default: 384)")
    p.add_argument("--fps", type=float, default=8.0, help="video frames per second (default: 8)")
    p.add_argument("--hold", type=float, default=None,
                   help="seconds the final image stays on screen (default: 1; particles 4, while the morph settles)")
    p.add_argument("--no-caption", dest="caption", action="store_false", help="leave out the caption")
    p.add_argument("--no-timeline", dest="timeline", action="store_false", help="leave out the mass timeline")
    p.add_argument("--particles", type=int, default=0,
                   help="particles layout: particle count (default: one per pixel of a half-size tile)")
    p.add_argument("--frames-per-step", type=int, default=6,
                   help="particles layout: video frames per recorded step (default: 6)")
    p.add_argument("--region", dest="regions", action="append", default=[], metavar="REGION",
                   help="a self-attention query region chosen now (box:X0,Y0,X1,Y1, pixel:X,Y, polygon:…, "
                        "mask:FILE.png; image pixels), drawn from a run recorded with --self-grid; repeat for grid")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    options = TimelapseOptions(
        layout=args.layout, words=tuple(w.strip() for w in args.words.split(",") if w.strip()),
        colormap=args.colormap, opacity=args.opacity, map_kind=args.map_kind, size=args.size, fps=args.fps,
        hold=args.hold, caption=args.caption, timeline=args.timeline, particles=args.particles,
        frames_per_step=args.frames_per_step, regions=parse_list(args.regions, from_cli_text),
    )
    try:
        summary = render_timelapse(args.run, args.out, options, progress=args.progress)
    except RecordingError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    w, h = summary["size"]
    log.info("wrote %s: %d frames, %dx%d, %d steps%s, words: %s (%.1f frames/s)", summary["path"], summary["frames"],
             w, h, summary["steps"], " (truncated recording)" if summary["truncated"] else "",
             ", ".join(summary["words"]), summary["fps_rendered"])
    return 0
