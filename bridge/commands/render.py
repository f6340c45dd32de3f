"""`render`: one generation from the command line, recorded step by step to a folder."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from ..denoised import PREVIEW_SOURCES
from ..errors import UserError
from ..presets import FIELD_BY_KEY
from ..threads import MAX_THREADS
from ..wiretext import word_list

HELP = "generate one image and record every step's per-word attention maps"
DESCRIPTION = """\
Generate one image and record the run: for every denoising step and every prompt word that
step's attention heat map (DAAM), the cumulative map, a preview image, then the final image.
The recording (docs/RECORDING.md) can be replayed live, turned into a timelapse or exported.
"""
EPILOG = """\
examples:
  python run_bridge.py render --prompt "a yellow star and a green circle" --steps 20 --seed 7 --out runs/star
  python run_bridge.py render --prompt "a cat in a hat" --model stable-diffusion-v1-5/stable-diffusion-v1-5 --out runs/cat
  python run_bridge.py render --prompt "a castle" --model ~/models/sd15.safetensors --width 768 --height 512 --out runs/castle
  python run_bridge.py render --prompt "neon city" --phases 0.1,0.5,0.4 --vae-every 5 --layers 16,32 --out runs/city
  python run_bridge.py render --model builtin:shapes-dit --prompt "a yellow star and a green circle" --concepts "star,circle,background" --out runs/star-dit

--model takes `builtin` (default, offline), `builtin:shapes-dit` (the built-in FLUX.1-family
transformer, offline), `builtin:tiny`, a diffusers folder (SD 1.x/2.x, SDXL, SD3/SD3.5, FLUX.1),
a .safetensors/.ckpt file or a hub id.  --layers keeps only some attention layers: on UNets
resolution factors (8 16 32 64, relative to the image, 8 = latent size) and/or name parts (down,
mid, up, up_blocks.1); on transformers block names (single, transformer_blocks, transformer_blocks.3).
"""

log = logging.getLogger(__name__)


DTYPES = ("auto", "fp32", "fp16", "bf16", "float32", "float16", "bfloat16")


def add_arguments(p) -> None:
    from ..limits import LIMITS as L

    p.add_argument("--prompt", required=True, help="what the image should show")
    p.add_argument("--negative-prompt", "--negative", dest="negative", default="",
                   help="negative prompt (only used with guidance > 1)")
    p.add_argument("--out", help="recording folder, created; must be empty or absent (default: runs/<run id>)")
    p.add_argument("--model", default="builtin", help="model to load (default: %(default)s; see below)")
    p.add_argument("--steps", type=int, default=20, help=f"denoising steps, {L.steps.lo}..{L.steps.hi} (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help=f"random seed, {L.seed.lo}..{L.seed.hi}; same seed, same run (default: %(default)s)")
    p.add_argument("--guidance", type=float, default=None, help=f"classifier-free guidance scale, {L.guidance.lo:g}..{L.guidance.hi:g} (default: the model's: 3 for the built-in model, from its bridge_defaults.json; 7.5 for SD, 5 for SDXL, 7 for SD3; on FLUX.1-dev its distilled guidance, 3.5; on schnell, above 1 runs true CFG)")
    p.add_argument("--width", type=int, default=None,
                   help=f"image width in pixels, a multiple of {L.width.multiple} in {L.width.lo}..{L.width.hi} (default: the model's native size)")
    p.add_argument("--height", type=int, default=None,
                   help=f"image height in pixels, a multiple of {L.height.multiple} in {L.height.lo}..{L.height.hi} (default: the model's native size)")
    p.add_argument("--map-size", default=None, help=f"heat map size: N or HxW, sides {L.map_size.lo}..{L.map_size.hi} (default: latent size, ≥ 64 on the long side)")
    p.add_argument("--vae-every", type=int, default=None,
                   help="full VAE preview every k steps, 0: cheap linear previews only (default: the model's, 1 for the "
                        "built-in model, whose VAE is small, else 0)")
    p.add_argument("--preview", choices=PREVIEW_SOURCES, default="denoised",
                   help="what each step's preview shows: denoised, the step's estimate of the final image (the picture "
                        "from the first steps), or latents, the noisy latents (default: %(default)s)")
    p.add_argument("--phases", default=None, metavar="N,S,D",
                   help="noise,structure,detail fractions of the run (default: 0.2,0.4,0.4)")
    for key in ("noise", "structure", "detail"):  # `serve`'s spelling, one fraction each
        p.add_argument(f"--phase-{key}", type=float, default=None, metavar="F", help=f"fraction of the run in the {key} phase")
    p.add_argument("--phase-blend", type=float, default=None, metavar="F", help="cross-fade width around phase boundaries (default: 0.1)")
    p.add_argument("--layers", default=None, help="comma-separated cross-attention layer filter (default: all layers)")
    p.add_argument("--include-special", action="store_true", help="also map the start, end and padding tokens")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: %(default)s)")
    p.add_argument("--dtype", default="auto", choices=DTYPES, metavar="DTYPE",
                   help="auto (fp16 on a GPU, fp32 on CPU), fp32, fp16 or bf16 (or float32, float16, bfloat16)")
    p.add_argument("--threads", type=int, default=0, metavar="N", help=FIELD_BY_KEY["threads"].help)
    p.add_argument("--region", dest="regions", action="append", default=[], metavar="REGION",
                   help=FIELD_BY_KEY["regions"].help + ", or mask:FILE.png (white or opaque pixels are in; "
                        "stretched over the image); each records a self-attention map per step")
    p.add_argument("--self-grid", type=int, default=0, metavar="N", help=FIELD_BY_KEY["self_grid"].help)
    p.add_argument("--concepts", action="append", default=[], metavar="WORDS", help=FIELD_BY_KEY["concepts"].help)
    p.add_argument("--concept-layers", default=None, metavar="N,N,…",
                   help="on Flux, the dual-stream blocks whose concept maps are averaged (default: the later half)")
    p.add_argument("--max-latent", type=int, default=0, metavar="N", help=FIELD_BY_KEY["max_latent"].help)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def parse_layer_indices(text: str | None):
    """"10,12,14" or "10-18" → block indices; None for none given."""
    if not text:
        return None
    indices = []
    for part in text.split(","):
        part = part.strip()
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise UserError(f"--concept-layers takes block numbers like 10,12 or 10-18, got {text!r}")
        indices += range(int(lo), int(hi) + 1) if hi else [int(lo)]
    return tuple(indices)


def parse_map_size(text: str | None):
    from ..limits import LIMITS

    if text is None:
        return None
    parts = text.lower().replace(" ", "").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise UserError(f"--map-size must be N or HxW, like 64 or 48x64, got {text!r}") from None
    if len(values) not in (1, 2):
        raise UserError(f"--map-size must be N or HxW, like 64 or 48x64, got {text!r}")
    bound = LIMITS.map_size
    if any(v not in bound for v in values):
        raise UserError(f"--map-size sides must be from {bound.lo} to {bound.hi}, got {text!r}")
    return values[0] if len(values) == 1 else tuple(values)


def parse_phases(text: str | None, noise=None, structure=None, detail=None, blend=None):
    """``--phases N,S,D`` and/or the ``--phase-*`` flags → a PhaseSchedule (given flags win)."""
    from ..phases import PhaseSchedule
    from ..presets import PresetError, parse_phase_fractions

    try:
        base = parse_phase_fractions(text) if text is not None else None
    except PresetError as exc:
        raise UserError(str(exc)) from None
    if base is not None and any(v is not None for v in (noise, structure, detail)):
        raise UserError("give --phases or the --phase-noise/--phase-structure/--phase-detail flags, not both")
    default = PhaseSchedule()
    n, s, d = base or (default.noise, default.structure, default.detail)
    try:
        return PhaseSchedule(n if noise is None else noise, s if structure is None else structure,
                             d if detail is None else detail, default.blend if blend is None else blend)
    except ValueError as exc:
        raise UserError(f"--phases must be three fractions summing to 1, like 0.2,0.4,0.4 ({exc})") from None


def check_sizes(width, height) -> None:
    """The table's multiple, before a model is loaded (the engine then checks the model's own)."""
    from ..limits import LIMITS

    for name, value in (("width", width), ("height", height)):
        multiple = getattr(LIMITS, name).multiple
        if value is not None and value % multiple:
            raise UserError(f"{name} must be a multiple of {multiple}, got {value}")


class StartKeeper:
    """A sink that keeps the run's RunStart, for the summary line (words, dropped words)."""

    start = None

    def on_run_start(self, start) -> None:
        self.start = start


def _check_out(out: Path) -> bool:
    """Make the recording folder now, before the model loads, so an unwritable --out fails in a
    second instead of after the render; True when this created it (removed again on refusal)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"recording folder {out} already exists and is not empty; choose another --out")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write the recording folder {out} ({exc.strerror or exc}); choose another --out") from None
    return created


def run(args) -> int:
    from ..bus import Bus
    from ..engine import Engine, GenerationRequest, check_request, new_run_id
    from ..recording import Recorder
    from ..concepts import parse_concepts
    from ..regions import from_cli_text, parse_list
    from ..sinks.progress import ProgressSink

    out = Path(args.out) if args.out else Path("runs") / new_run_id()
    layers = tuple(s.strip() for s in args.layers.split(",") if s.strip()) if args.layers else None
    request = GenerationRequest(
        prompt=args.prompt, negative_prompt=args.negative, seed=args.seed, steps=args.steps, guidance=args.guidance,
        width=args.width, height=args.height, map_size=parse_map_size(args.map_size),
        phases=parse_phases(args.phases, args.phase_noise, args.phase_structure, args.phase_detail, args.phase_blend),
        vae_every=args.vae_every, preview=args.preview, include_special=args.include_special, layers=layers,
        regions=parse_list(args.regions, from_cli_text), self_grid=args.self_grid,
        concepts=parse_concepts(args.concepts), concept_layers=parse_layer_indices(args.concept_layers),
    )
    check_request(request)  # fail on bad flags before the (slow) model load
    check_sizes(args.width, args.height)
    if not 0 <= args.threads <= MAX_THREADS:
        raise UserError(f"--threads must be from 0 (one fewer than the usable cores) to {MAX_THREADS}, got {args.threads}")
    if args.max_latent < 0:
        raise UserError(f"--max-latent must be 0 (the device's own limit) or more, got {args.max_latent}")
    created = _check_out(out)
    try:
        engine = Engine.load(args.model, device=args.device, dtype=args.dtype, progress=not args.no_progress,
                             threads=args.threads)
        if args.max_latent:
            engine.max_latent = args.max_latent
        request = engine.validate(request)  # before anything is written
    except BaseException:
        if created:  # a refused request leaves nothing behind to block a rerun
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    keeper = StartKeeper()
    recorder = Recorder(out)
    bus = Bus([recorder, *([] if args.no_progress else [ProgressSink(leave=True)]), keeper])
    try:
        end = engine.generate(request, bus)
    finally:
        bus.close()  # returns once the recording is on disk
    start = keeper.start
    # a very long prompt would make this one line thousands of characters: clipped, still naming the count
    dropped = word_list(start.dropped_words, sep=", ") if start.dropped_words else "none"
    if not recorder.ok:  # the image was made but not kept: that is a failed command
        print(f"error: the recording in {out} is incomplete: {recorder.error}")
        return 1
    print(
        f"{end.status}: {end.steps_done}/{start.steps} steps in {end.elapsed:.1f} s on {engine.device} "
        f"({engine.model_name}); words: {word_list(start.words, 400, ' · ')}; dropped words: {dropped}; recording: {out}"
    )
    if end.status == "failed":
        print(f"error: the run failed: {end.error}")
        return 1
    return 0 if end.status == "completed" else 130
