"""`run_bridge.py export RUN --what maps,overlays,masks,curves`: files from a recorded run."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .. import masks
from ..errors import UserError
from ..export import WHAT, ExportOptions, export
from ..recording import RecordingError
from ..regions import from_cli_text, parse_list
from ..timelapse.colormaps import COLORMAPS

log = logging.getLogger("bridge.export")

HELP = "export per-word heat maps, overlays, DAAM masks and attention-mass curves from a recording"
DESCRIPTION = """\
Write files from a recording (made by `render` or `serve --record`), per word of the prompt:

  maps      maps/NN_word.png      the final DAAM map, normalised to its peak, colormapped
  overlays  overlays/NN_word.png  that heat map over the final image
  masks     masks/NN_word.png     binary DAAM mask, Eqn. 7 of Tang et al. (2023):
                                  white where D(x,y) >= tau * max D, at image size
  curves    curves.csv            per step: phase, each word's attention mass (as streamed
                                  live) and the IoU of its mask so far with the final mask
            stability.csv         per word: the step where its map stabilises
            curves.png            the mass curves with each stabilisation step marked

A word's map stabilises at the first step s after which the mask of its cumulative DAAM map
keeps an IoU >= --stable-iou (0.9) with the final mask: stopping the run at any later step
would not change where the word is said to be.
"""
EPILOG = """\
examples:
  python run_bridge.py export runs/star
  python run_bridge.py export runs/star --what masks --tau 0.3 -o masks_03
  python run_bridge.py export runs/star --what curves --stable-iou 0.95
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="recording folder (contains manifest.json)")
    p.add_argument("-o", "--out", default=None, help="output folder (default: RUN/export)")
    p.add_argument("--what", default=",".join(WHAT), help=f"comma-separated: {','.join(WHAT)} (default: all)")
    p.add_argument("--tau", type=float, default=masks.DEFAULT_TAU, help="mask threshold, fraction of the peak (default: 0.4)")
    p.add_argument("--stable-iou", type=float, default=masks.DEFAULT_MIN_IOU,
                   help="IoU with the final mask that defines a stable map (default: 0.9)")
    p.add_argument("--colormap", choices=COLORMAPS, default="inferno", help="heat-map colours (default: inferno)")
    p.add_argument("--opacity", type=float, default=0.6, help="overlay opacity at full attention, 0..1 (default: 0.6)")
    p.add_argument("--size", type=int, default=ExportOptions.size, metavar="PX",
                   help="long side of the exported images in pixels, maps upsampled smoothly (default: %(default)s; "
                        "0: the recorded image's size)")
    p.add_argument("--region", dest="regions", action="append", default=[], metavar="REGION",
                   help="self: a query region chosen now (box:X0,Y0,X1,Y1, pixel:X,Y, polygon:…, mask:FILE.png, "
                        "image pixels), from a run recorded with --self-grid; repeat for several")
    p.add_argument("--diffuse", type=int, default=0, metavar="N",
                   help="self: with --region, also each region's diffused attention after N expansions (e.g. 3)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    options = ExportOptions(
        what=tuple(w.strip() for w in args.what.split(",") if w.strip()), tau=args.tau,
        min_iou=args.stable_iou, colormap=args.colormap, opacity=args.opacity, size=args.size,
        regions=parse_list(args.regions, from_cli_text), diffuse=args.diffuse,
    )
    out = Path(args.out) if args.out else Path(args.run) / "export"
    try:
        result = export(args.run, out, options, progress=args.progress)
    except RecordingError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot write into {out}: {exc.strerror or exc}") from None
    for kind, paths in result["files"].items():
        log.info("%-8s %d file(s) in %s", kind, len(paths), Path(paths[0]).parent if paths else out)
    for s in result.get("stability", []):
        log.info("  %-16s stable from step %s", s["word"], "-" if s["stable_step"] is None else s["stable_step"])
    if result["truncated"]:
        log.warning("the recording is truncated: exports use its %d completed steps", result["steps"])
    return 0
