"""The engine: one loaded pipeline that turns generation requests into run events on a bus.

    engine = Engine.load("builtin")                      # ModelError on failure
    req = engine.validate(GenerationRequest("a yellow star and a green circle", seed=7))
    end = engine.generate(req, bus)                      # RunStart, one StepFrame per step, RunEnd

Per step (in ``callback_on_step_end``) the attention aggregator closes the step on the device,
the preview is made on the device, and everything crosses to the host in one transfer.
What depends on the architecture (denoiser, attention modules, words, latents, defaults) is
asked of the pipeline's model family (``bridge.families``).
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace

import numpy as np

from .denoised import PREVIEW_SOURCES
from .errors import InvalidRequest
from .frames import RunEnd, RunStart, StepFrame, attention_mass
from .limits import CPU_LATENT_POSITIONS, LIMITS
from .models.defaults import MAX_GUIDANCE, is_guidance
from .phases import PhaseSchedule
from .selfgrid import grid_shape

log = logging.getLogger(__name__)

MAX_STEPS = int(LIMITS.steps.hi)  # bounds: bridge/limits.py
MAX_SIDE = int(LIMITS.width.hi)
MIN_MAP_LONG_SIDE = 64  # small latents (the built-in model's 8×8) are upsampled to at least this


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 20
    guidance: float | None = None  # None: the model's default (its folder's bridge_defaults.json, else 7.5; 0 for Turbo; LCM embeds it)
    width: int | None = None  # None: the model's native size
    height: int | None = None
    phases: PhaseSchedule = field(default_factory=PhaseSchedule)
    map_size: tuple[int, int] | int | None = None  # (h, w); None: latent size, at least 64 on the long side
    vae_every: int | None = None  # full VAE decode for the preview every k steps (0: never, linear only); None: the model's default
    preview: str = "denoised"  # what previews show: the step's x̂₀ ("denoised", where the scheduler has one) or the "latents"
    include_special: bool = False  # also map <start>, <end> and <pad>
    layers: tuple | None = None  # cross-attention layer filter (see attention.LayerFilter)
    regions: tuple = ()  # self-attention query regions (bridge/regions.py), in image pixels
    self_grid: int = 0  # record self-attention pooled to this many cells a side (bridge/selfgrid.py); 0: off
    concepts: tuple = ()  # concept names for concept maps (bridge/attention/concepts.py), any words
    concept_layers: tuple | None = None  # on transformers, the dual-stream blocks concept maps average (None: the later half)


class _Cancelled(Exception):
    """Raised inside the step callback to stop the pipeline at once."""


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def default_map_size(latent_hw: tuple[int, int]) -> tuple[int, int]:
    h, w = latent_hw
    k = max(1, math.ceil(MIN_MAP_LONG_SIDE / max(h, w)))
    return h * k, w * k


class Engine:
    """A loaded model ready to generate.  One ``generate`` at a time."""

    def __init__(self, loaded):
        from .families import family_for
        from .preview import Previewer, fit_latent_rgb, load_latent_rgb

        self.loaded = loaded
        self.pipe = loaded.pipe
        self.family = loaded.arch
        if self.family is None:
            self.family = family_for(self.pipe, loaded.source.name)
            self.family.configure(loaded.defaults)
        self._lock = threading.Lock()
        # latent positions a request may have; a CPU's own cap, see limits.py (None: no cap)
        self.max_latent = CPU_LATENT_POSITIONS if str(loaded.device).startswith("cpu") else None
        self.capture_timer = None  # a CaptureTimer: benchmarks time the capture's own work (bridge/attention/timer.py)
        folder = loaded.source.location if loaded.source.kind == "folder" else None
        fit = load_latent_rgb(folder) or fit_latent_rgb(self.family.vae)
        self.previewer = Previewer(fit, loaded.device, self.family.spatial_latents)

    @classmethod
    def load(cls, model: str | None = "builtin", device: str = "auto", dtype: str = "auto", progress: bool = True,
             threads: int = 0) -> "Engine":
        from .models import load_model

        return cls(load_model(model, device=device, dtype=dtype, progress=progress, threads=threads))

    # -- what the model is --------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.loaded.source.name

    @property
    def device(self) -> str:
        return self.loaded.device

    @property
    def vae_factor(self) -> int:
        return self.family.vae_factor

    @property
    def native_size(self) -> tuple[int, int]:
        """(width, height) the model was trained at."""
        return self.family.native_size

    @property
    def embeds_guidance(self) -> bool:
        """Guidance is a denoiser input (LCM-style UNets): no CFG batch."""
        return self.family.embeds_guidance

    @property
    def default_guidance(self) -> float:
        if "guidance" in self.loaded.defaults:  # the folder's own recommendation
            return self.loaded.defaults["guidance"]
        return self.family.default_guidance(self.model_name)

    @property
    def max_steps(self) -> int:
        """Most steps this model's scheduler can take (see ModelFamily.max_steps)."""
        return self.family.max_steps(MAX_STEPS)

    def uses_cfg(self, guidance: float) -> bool:
        return self.family.uses_cfg(guidance)

    @property
    def tokenizer(self):
        return self.family.tokenizer

    # -- requests -----------------------------------------------------------------------
    def validate(self, req: GenerationRequest) -> GenerationRequest:
        """Check every field and fill the model defaults; InvalidRequest with one sentence."""
        req = check_request(req)
        if req.steps > self.max_steps:
            raise InvalidRequest(
                f"steps must be at most {self.max_steps} for this model's {type(self.pipe.scheduler).__name__}, got {req.steps}"
            )
        guidance = self.default_guidance if req.guidance is None else req.guidance
        native_w, native_h = self.native_size
        multiple = self.family.size_multiple
        width = native_w if req.width is None else _int(req.width, "width", multiple, MAX_SIDE)
        height = native_h if req.height is None else _int(req.height, "height", multiple, MAX_SIDE)
        for name, v in (("width", width), ("height", height)):
            if v % multiple:
                raise InvalidRequest(f"{name} must be a multiple of {multiple} for this model, got {v}")
        latent_hw = self.family.latent_hw(height, width)
        self._check_cost(width, height, latent_hw)
        if req.map_size is None:
            map_size = default_map_size(latent_hw)
        elif isinstance(req.map_size, (int, np.integer)) and not isinstance(req.map_size, bool):
            s = _int(req.map_size, "map size", LIMITS.map_size.lo, LIMITS.map_size.hi)
            map_size = (s, s)
        else:
            try:
                mh, mw = req.map_size
            except (TypeError, ValueError):
                raise InvalidRequest(f"map size must be one number or (height, width), got {req.map_size!r}") from None
            map_size = (_int(mh, "map height", LIMITS.map_size.lo, LIMITS.map_size.hi),
                        _int(mw, "map width", LIMITS.map_size.lo, LIMITS.map_size.hi))
        if req.layers is not None:
            self._check_layers(req.layers)
        vae_every = self.loaded.defaults.get("vae_every", 0) if req.vae_every is None else req.vae_every
        self._check_words(req.prompt)
        req = replace(req, guidance=float(guidance), width=width, height=height, map_size=map_size, vae_every=vae_every)
        self._check_regions(req)
        return self._check_concepts(req)

    @property
    def limits(self):
        """The table's limits with the sides this engine's device can run (sent in ``hello``)."""
        from .limits import for_positions

        return LIMITS if not self.max_latent else for_positions(LIMITS, self.max_latent, self.family.vae_factor)

    def _check_cost(self, width: int, height: int, latent_hw: tuple[int, int]) -> None:
        h, w = latent_hw
        if self.max_latent and h * w > self.max_latent:
            side = self.limits.width.hi
            raise InvalidRequest(
                f"{width}×{height} is {h * w:,} latent positions ({w}×{h}), over the {self.max_latent:,} this "
                f"{self.device.upper() if self.device == 'cpu' else self.device} runs in reasonable time (about {side}×{side} "
                "with this model); choose a smaller size, use a GPU, or give a larger --max-latent")

    def _fit_concepts(self, concepts) -> tuple:
        """Concepts a control set (checked there); a set that no longer fits is dropped with a log line."""
        from .concepts import parse_concepts

        try:
            return parse_concepts(concepts)
        except InvalidRequest as exc:
            log.warning("concepts dropped: %s", exc)
            return ()

    def fit_regions(self, regions, req: GenerationRequest) -> tuple:
        """The regions that lie in this request's image (others are dropped with a log line: a
        region set for an earlier, larger image must not end a run)."""
        from .regions import RegionError

        kept = []
        for region in regions or ():
            try:
                region.check_inside(req.width, req.height)
                kept.append(region)
            except RegionError as exc:
                log.warning("self-attention region dropped: %s", exc)
        return tuple(kept)

    def _check_regions(self, req: GenerationRequest) -> None:
        from .regions import LIMITS as _L, RegionError

        if req.self_grid and not self.family.has_region_maps:
            raise InvalidRequest(f"self-attention maps are not available for {self.family.name} models yet; "
                                 "use no self grid")
        if not req.regions:
            return
        if not self.family.has_region_maps:
            raise InvalidRequest(f"self-attention maps are not available for {self.family.name} models yet; "
                                 "send no regions")
        if len(req.regions) > _L.regions:
            raise RegionError(f"at most {_L.regions} regions at once, got {len(req.regions)}")
        for region in req.regions:
            region.check_inside(req.width, req.height)

    def _check_concepts(self, req: GenerationRequest) -> GenerationRequest:
        from .concepts import parse_concepts

        concepts = parse_concepts(req.concepts)
        if concepts and not self.family.has_concept_maps:
            raise InvalidRequest(f"concept maps are not available for {self.family.name} models yet; send no concepts")
        layers = None
        if req.concept_layers:
            try:
                layers = tuple(sorted({int(i) for i in req.concept_layers}))
            except (TypeError, ValueError):
                raise InvalidRequest(f"concept layers are block indices, got {req.concept_layers!r}") from None
            blocks = self.family.concept_blocks
            if not blocks:
                raise InvalidRequest(f"{self.family.name} models take no concept layers (their concept maps use every cross-attention layer)")
            if any(not 0 <= i < blocks for i in layers):
                raise InvalidRequest(f"concept layers are {self.family.concept_block_name} block indices 0..{blocks - 1}, "
                                     f"got {list(layers)}")
        return replace(req, concepts=concepts, concept_layers=layers)

    def _check_words(self, prompt: str) -> None:
        """A prompt whose first word alone is over the text encoder's limit would map nothing."""
        from .wiretext import quote

        # The first word alone decides it, and mapping only it logs no "dropped words" line for a
        # long prompt that is fine (the run maps the whole prompt, and says so, once).
        words = self.family.map_words(prompt.split()[0], False)
        if not words.words and words.dropped_words:
            raise InvalidRequest(f"the prompt's first word {quote(words.dropped_words[0], 40)} is longer than the text "
                                 "encoder can read, so no word would get a map; split or shorten it")

    def _check_layers(self, layers) -> None:
        from .attention import LayerFilter

        LayerFilter(layers).check(self.family)

    # -- generation ---------------------------------------------------------------------
    def generate(self, req: GenerationRequest, bus, should_stop=lambda: False, abort=None, regions=None, concepts=None) -> RunEnd:
        """Run one request; publishes RunStart, StepFrames and RunEnd on ``bus``; returns the RunEnd.

        ``should_stop`` is asked after every step (it may block, e.g. to pause); ``abort``, if
        given, is asked before every layer of the denoiser and the VAE and must be cheap: True
        ends the run at once, mid-step, so a new prompt does not wait for a whole step of a
        large model (bridge/interrupt.py).  ``regions``, if given, is asked at every step start
        for the query regions of the self-attention maps (a control may change them mid-run);
        without it the request's own regions hold for the whole run.  ``concepts`` likewise gives
        the concept names of the concept maps at every step start."""
        if not self._lock.acquire(blocking=False):
            raise InvalidRequest("the engine is busy with another run; wait for it or cancel it first")
        try:
            return self._generate(self.validate(req), bus, should_stop, abort, regions, concepts)
        finally:
            self._lock.release()

    def _generate(self, req: GenerationRequest, bus, should_stop, abort, regions, concepts) -> RunEnd:
        import torch

        from .attention import Aggregator, AttentionCapture
        from .attention.selfagg import SelfAggregator, SelfGrid
        from .interrupt import InterruptPoints, RunAborted
        from .denoised import DenoisedTap
        from .preview import upscale
        from .transfer import to_host

        pipe = self.pipe
        words = self.family.map_words(req.prompt, req.include_special)
        cfg = self.uses_cfg(req.guidance)
        latent_hw = self.family.latent_hw(req.height, req.width)
        self.family.begin_run(latent_hw)
        timesteps = self._timesteps(req.steps, latent_hw)
        total = len(timesteps)  # denoising iterations = frames; PNDM, for one, runs steps + 1
        run_id = new_run_id()
        extra = self._extra(req, cfg)
        if total != req.steps:
            extra["requested_steps"] = req.steps
        start = RunStart(
            run_id=run_id, prompt=req.prompt, negative_prompt=req.negative_prompt, seed=req.seed, steps=total,
            guidance=req.guidance, width=req.width, height=req.height, map_size=tuple(req.map_size),
            words=words.words, word_token_indices=words.token_indices, dropped_words=words.dropped_words,
            model=self.model_name, scheduler=type(pipe.scheduler).__name__, phases=req.phases,
            extra=extra,
        )
        bus.publish(start)
        t0 = time.perf_counter()
        state = {"done": 0, "last": t0}
        aggregator = Aggregator(words.token_indices, words.sequence_length, latent_hw, req.map_size, cfg, self.device)
        current_regions = regions or (lambda: req.regions)
        regional = SelfAggregator((req.height, req.width), req.map_size, self.device)
        regional.set_regions(self.fit_regions(current_regions(), req))
        pooled = SelfGrid(grid_shape(req.self_grid, latent_hw), self.device) if req.self_grid else None
        current_concepts = concepts or (lambda: req.concepts)
        conceptual = self.family.concept_producer(latent_hw, req.map_size, cfg, self.device, req.concept_layers) \
            if self.family.has_concept_maps else None
        if conceptual is not None:
            conceptual.timer = self.capture_timer
            conceptual.set_concepts(self._fit_concepts(current_concepts()))
            conceptual.start_step()

        timer = self.capture_timer

        def on_step_end(_pipe, i, t, kwargs):
            tc = time.perf_counter()
            latents = kwargs["latents"]
            if req.preview == "denoised" and tap.latest is not None:
                latents = tap.latest  # this step's x̂₀: the picture, long before the latents show it
            started = timer.start() if timer else None
            step_maps, cumulative = aggregator.end_step()
            step_kinds = {"maps": step_maps, "cumulative": cumulative}
            step_regions = regional.regions
            self_maps = regional.end_step()
            if self_maps is not None:
                step_kinds["self"] = self_maps
            grid = pooled.end_step() if pooled is not None else None
            if grid is not None:
                step_kinds["selfgrid"] = grid
            regional.set_regions(self.fit_regions(current_regions(), req))  # the next step's
            step_concepts = ()
            if conceptual is not None:
                concept_maps, step_concepts = conceptual.end_step(), conceptual.concepts
                if concept_maps is not None:
                    step_kinds["concepts"] = concept_maps
                else:
                    step_concepts = ()
                conceptual.set_concepts(self._fit_concepts(current_concepts()))
                conceptual.start_step()  # the next step's (new ones are encoded now)
            if timer:
                timer.stop("step end: aggregation", started)
            full = req.vae_every and ((i + 1) % req.vae_every == 0 or i + 1 == total)
            tp = time.perf_counter()
            preview = self.previewer.decode(pipe, latents) if full else self.previewer.linear(latents)
            # One device → host transfer per step: every map kind and the preview together.
            started = timer.start() if timer else None
            host, small = to_host(step_kinds, preview)
            if timer:
                timer.stop("host transfer (maps and preview)", started)
                timer.end_step()
            rgb = upscale(small, req.height, req.width)
            now = time.perf_counter()
            frame = StepFrame(
                run_id=run_id, step=i, total=total, timestep=timesteps[i] if i < total and timesteps[i] == timesteps[i] else float(t),
                phase=req.phases.phase_at(i, total), phase_weights=req.phases.weights_at(i, total),
                words=words.words, kinds=host, regions=tuple(r.to_dict() for r in step_regions) if self_maps is not None else (),
                concepts=step_concepts,
                mass=attention_mass(host["maps"]), preview=rgb, elapsed=now - t0,
                timings={"step": tc - state["last"], "capture": tp - tc, "preview": now - tp},
            )
            state["done"], state["last"] = i + 1, now
            bus.publish(frame)
            if should_stop():
                raise _Cancelled()
            return kwargs

        try:
            with AttentionCapture(self.family, req.layers) as capture, DenoisedTap(pipe.scheduler) as tap, \
                    InterruptPoints([self.family.denoiser, self.family.vae], abort), conceptual or nullcontext():
                capture.begin(aggregator, regional, pooled)
                capture.timer = timer
                kwargs = dict(
                    prompt=req.prompt, num_inference_steps=req.steps,
                    width=req.width, height=req.height, output_type="np",
                    generator=torch.Generator("cpu").manual_seed(req.seed),
                    callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["latents"],
                    **self.family.guidance_kwargs(req.guidance, req.negative_prompt, cfg), **self.family.pipeline_kwargs(),
                )
                with torch.inference_mode():
                    out = pipe(**kwargs)
            image = np.clip(np.rint(np.asarray(out.images[0]) * 255), 0, 255).astype(np.uint8)
            end = RunEnd(run_id, "completed", state["done"], time.perf_counter() - t0, image)
        except (_Cancelled, RunAborted):
            end = RunEnd(run_id, "cancelled", state["done"], time.perf_counter() - t0)
        except KeyboardInterrupt:  # Ctrl-C: close the run cleanly for every sink, then stop
            bus.publish(RunEnd(run_id, "cancelled", state["done"], time.perf_counter() - t0, error="interrupted"))
            raise
        except (MemoryError, torch.OutOfMemoryError):
            # the device could not hold this size: one sentence with the way out, not an allocator dump
            if str(self.device).startswith("cuda"):
                torch.cuda.empty_cache()
            log.error("run %s ran out of memory at step %d (%d×%d on %s)", run_id, state["done"], req.width, req.height, self.device)
            end = RunEnd(run_id, "failed", state["done"], time.perf_counter() - t0,
                         error=f"the {self.device} ran out of memory for {req.width}×{req.height}; choose a smaller size "
                               "(or fewer self-attention regions)")
        except Exception as exc:
            log.exception("run %s failed at step %d", run_id, state["done"])
            end = RunEnd(run_id, "failed", state["done"], time.perf_counter() - t0, error=f"{type(exc).__name__}: {exc}".splitlines()[0])
        bus.publish(end)
        return end

    def _timesteps(self, steps: int, latent_hw: tuple[int, int]) -> list[float]:
        """The scheduler's timesteps for ``steps``, on the host (so frames never sync on ``t``)."""
        scheduler = self.pipe.scheduler
        try:  # the pipeline sets them again, identically
            scheduler.set_timesteps(steps, device="cpu", **self.family.scheduler_kwargs(latent_hw, steps))
            return [float(t) for t in scheduler.timesteps]
        except Exception:  # a scheduler that needs more than a step count: count steps as asked
            log.debug("could not list %s timesteps ahead of the run", type(scheduler).__name__, exc_info=True)
            return [float("nan")] * steps

    def _extra(self, req: GenerationRequest, cfg: bool) -> dict:
        import diffusers
        import torch
        import transformers

        from . import __version__

        return {
            "device": self.device,
            "dtype": str(self.loaded.dtype).replace("torch.", ""),
            "cfg": cfg,
            "vae_every": req.vae_every,
            "preview": req.preview,
            "include_special": req.include_special,
            "layers": list(req.layers) if req.layers else "all",
            "concepts": list(req.concepts),
            "versions": {"bridge": __version__, "torch": str(torch.__version__), "diffusers": diffusers.__version__,
                         "transformers": transformers.__version__, "numpy": np.__version__},
        }


def check_request(req: GenerationRequest) -> GenerationRequest:
    """The checks that need no model (so a command line can fail before loading one)."""
    if not isinstance(req.prompt, str) or not req.prompt.strip():
        raise InvalidRequest("the prompt is empty; type what the image should show")
    if not isinstance(req.negative_prompt, str):
        raise InvalidRequest("the negative prompt must be text")
    seed = _int(req.seed, "seed", LIMITS.seed.lo, LIMITS.seed.hi)
    steps = _int(req.steps, "steps", LIMITS.steps.lo, LIMITS.steps.hi)
    g = req.guidance
    if g is not None and not is_guidance(g):
        raise InvalidRequest(f"guidance must be a number from 0 to {MAX_GUIDANCE:g}, got {g!r}")
    for name in ("width", "height"):
        if getattr(req, name) is not None:
            _int(getattr(req, name), name, getattr(LIMITS, name).lo, getattr(LIMITS, name).hi)
    vae_every = None if req.vae_every is None else _int(req.vae_every, "vae_every", LIMITS.vae_every.lo, LIMITS.vae_every.hi)
    if req.preview not in PREVIEW_SOURCES:
        raise InvalidRequest(f"preview must be one of {', '.join(PREVIEW_SOURCES)}, got {req.preview!r}")
    if not isinstance(req.phases, PhaseSchedule):
        raise InvalidRequest("phases must be a phase schedule (noise, structure, detail fractions)")
    layers = None if not req.layers else tuple(req.layers)
    self_grid = _int(req.self_grid, "self_grid", LIMITS.self_grid.lo, LIMITS.self_grid.hi)
    return replace(req, seed=seed, steps=steps, vae_every=vae_every, layers=layers, include_special=bool(req.include_special),
                   self_grid=self_grid)


def _int(value, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) and not (isinstance(value, float) and value.is_integer()):
        raise InvalidRequest(f"{name} must be a whole number, got {value!r}")
    v = int(value)
    if not lo <= v <= hi:
        raise InvalidRequest(f"{name} must be from {lo} to {hi}, got {v}")
    return v
