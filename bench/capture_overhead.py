#!/usr/bin/env python3
"""Cost of the capture: the same pipeline and seed, plain vs captured, side by side in one run.

    python bench/capture_overhead.py                      # CPU: SD 1.5 UNet at 256×256, 4 steps
    python bench/capture_overhead.py --device cuda --size 512 --steps 20

"plain" is the bare diffusers pipeline call (SDPA everywhere, no callback).  "captured" is
``Engine.generate`` on the same pipeline object: capture processors on every cross-attention
layer, per-step DAAM aggregation, the linear preview, the one device→host transfer per step and
the StepFrame records (published to an empty bus, so no sink cost is counted).  "box" is the
captured run with one self-attention query region, a box of 8 × 8 = 64 latent pixels in the
image's centre (``--no-box`` leaves it out): its map costs the box's rows of every attn1 layer.

The UNet is the published Stable Diffusion 1.5 architecture (config below) with random
weights: weights do not change the cost.  The text encoder is a 1-layer CLIP with SD's 768-wide
output and the VAE is the built-in tiny one: both run once per image while the UNet runs
twice (CFG) per step, so the UNet dominates the time and both variants share them anyway.
Runs alternate (plain, captured, plain, …) after a warm-up of each, and medians are reported.
On a shared CPU wall time is noisy; the process CPU time (all threads) is printed beside it,
and with ``--threads 1`` (no threads spinning while they wait for a busy core) it is a steady
measure of the work done.
Peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the process's resident set
sampled every millisecond.  Both as absolute peaks and as growth above the loaded model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Stable Diffusion 1.5's UNet (its published unet/config.json).
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32, norm_eps=1e-5, act_fn="silu",
    center_input_sample=False, downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, mid_block_scale_factor=1,
)


# Stable Diffusion XL base 1.0's UNet (its published unet/config.json): 2.6 B parameters.
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=2048, attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10),
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, norm_num_groups=32, norm_eps=1e-5, act_fn="silu",
    flip_sin_to_cos=True, freq_shift=0,
)


# FLUX.1 schnell's transformer (its published transformer/config.json: 19 dual-stream and 38
# single-stream blocks, 12 B parameters); --blocks keeps fewer of each for a CPU.
FLUX_TRANSFORMER = dict(
    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128, num_attention_heads=24,
    joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=False, axes_dims_rope=(16, 56, 56),
)
# Stable Diffusion 3 medium's transformer (its published transformer/config.json: 24 joint blocks).
SD3_TRANSFORMER = dict(
    sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64, num_attention_heads=24,
    joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192,
)


def _transformer_parts(tiny, device, dtype):
    """What both transformer builds share: the tiny model's CLIP tokenizer, a 1-layer T5 of
    width 4096 on a sentencepiece vocabulary built offline, a 16-channel VAE of factor 8."""
    import torch
    from diffusers import AutoencoderKL
    from transformers import CLIPTokenizer, T5Config, T5EncoderModel, T5Tokenizer

    from bridge.tokenizers.t5_unigram import write_t5_tokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny / "tokenizer")
    t5_tokenizer = T5Tokenizer.from_pretrained(write_t5_tokenizer(Path(tempfile.mkdtemp()) / "t5"))
    torch.manual_seed(0)
    t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tokenizer), d_model=4096, d_ff=4096, d_kv=64, num_layers=1, num_heads=64,
                                 pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)).to(device=device, dtype=dtype)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(32, 32, 32, 32), layers_per_block=1,
                        norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        scaling_factor=0.3611, shift_factor=0.1159).to(device=device, dtype=dtype)
    return tokenizer, t5_tokenizer, t5, vae


def _clip(tokenizer, hidden, device, dtype, projection=None):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return cls(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden, num_hidden_layers=1,
        num_attention_heads=hidden // 64, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **({"projection_dim": projection} if projection else {}),
    )).to(device=device, dtype=dtype)


def build_flux(device: str, dtype, blocks=None):
    """FLUX.1 schnell's transformer widths (random weights), ``blocks`` = (dual, single) kept."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    from bridge.models.resolve import BUILTIN_DIR

    tiny = BUILTIN_DIR / "tiny"
    tokenizer, t5_tokenizer, t5, vae = _transformer_parts(tiny, device, dtype)
    config = dict(FLUX_TRANSFORMER)
    if blocks:
        config["num_layers"], config["num_single_layers"] = blocks
    with torch.device(device):  # made where it runs: 12 B random parameters are slow to make on a host
        transformer = FluxTransformer2DModel(**config).to(dtype=dtype)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
    pipe = FluxPipeline(transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=_clip(tokenizer, 768, device, dtype),
                        tokenizer=tokenizer, text_encoder_2=t5, tokenizer_2=t5_tokenizer)
    pipe.set_progress_bar_config(disable=True)
    return pipe, Path(tempfile.mkdtemp())  # no folder defaults: the tiny model's preview fit is for 4 channels


def build_sd3(device: str, dtype, blocks=None):
    """SD3 medium's transformer widths (random weights), ``blocks`` = (joint blocks,) kept."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    from bridge.models.resolve import BUILTIN_DIR

    tiny = BUILTIN_DIR / "tiny"
    tokenizer, t5_tokenizer, t5, vae = _transformer_parts(tiny, device, dtype)
    config = dict(SD3_TRANSFORMER)
    if blocks:
        config["num_layers"] = blocks[0]
    with torch.device(device):
        transformer = SD3Transformer2DModel(**config).to(dtype=dtype)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=_clip(tokenizer, 768, device, dtype, projection=768), tokenizer=tokenizer,
        text_encoder_2=_clip(tokenizer, 1280, device, dtype, projection=1280), tokenizer_2=tokenizer,
        text_encoder_3=t5, tokenizer_3=t5_tokenizer)
    pipe.set_progress_bar_config(disable=True)
    return pipe, Path(tempfile.mkdtemp())  # no folder defaults: the tiny model's preview fit is for 4 channels


def build_sdxl(device: str, dtype):
    """SDXL's UNet (random weights) with 1-layer text encoders of SDXL's widths (768 + 1280)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from bridge.models.resolve import BUILTIN_DIR

    tiny = BUILTIN_DIR / "tiny"
    tokenizer = CLIPTokenizer.from_pretrained(tiny / "tokenizer")
    torch.manual_seed(0)

    def encoder(cls, hidden, **extra):
        return cls(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden, num_hidden_layers=1,
            num_attention_heads=hidden // 64, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **extra))

    unet = UNet2DConditionModel(**SDXL_UNET)
    text_encoder = encoder(CLIPTextModel, 768)
    text_encoder_2 = encoder(CLIPTextModelWithProjection, 1280, projection_dim=1280)
    vae = AutoencoderKL.from_pretrained(tiny / "vae")
    scheduler = DDIMScheduler.from_pretrained(tiny / "scheduler")
    unet, text_encoder, text_encoder_2, vae = (m.to(device=device, dtype=dtype) for m in (unet, text_encoder, text_encoder_2, vae))
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
                                     tokenizer_2=tokenizer, unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe, tiny


def build(device: str, dtype):
    import torch
    import transformers.utils.logging as tlog

    tlog.set_verbosity_error()  # its torchvision notice is about image processors this bench never uses
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from bridge.models.resolve import BUILTIN_DIR

    tiny = BUILTIN_DIR / "tiny"
    tokenizer = CLIPTokenizer.from_pretrained(tiny / "tokenizer")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=768, intermediate_size=768, num_hidden_layers=1, num_attention_heads=12,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    vae = AutoencoderKL.from_pretrained(tiny / "vae")
    scheduler = DDIMScheduler.from_pretrained(tiny / "scheduler")
    unet, text_encoder, vae = (m.to(device=device, dtype=dtype) for m in (unet, text_encoder, vae))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe, tiny


class PeakMemory:
    """Peak memory during a block: CUDA allocator peak, or sampled resident set on CPU."""

    def __init__(self, device: str):
        self.device = device

    def __enter__(self):
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = self.peak = _rss()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss())


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--arch", choices=("sd15", "sdxl", "sd3", "flux"), default="sd15",
                        help="the architecture: the UNets of Stable Diffusion 1.5 or SDXL base, the transformers of SD3 medium "
                             "or FLUX.1 schnell (random weights; default: %(default)s)")
    parser.add_argument("--blocks", default=None, metavar="N[,M]",
                        help="transformers: keep N joint (SD3) or N dual- and M single-stream (Flux) blocks of the published "
                             "widths (default: all; a CPU wants e.g. 2 or 1,2)")
    parser.add_argument("--concepts", default="apple,table,background",
                        help="the concepts variant's concept names (Flux: ConceptAttention; UNets: OVAM; empty: no such variant)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each variant (default: %(default)s)")
    parser.add_argument("--no-box", dest="box", action="store_false", help="leave out the self-attention box variant")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch (default: torch's choice); 1 makes CPU time a steady measure of work on a busy machine")
    args = parser.parse_args()

    import diffusers
    import numpy as np
    import torch

    diffusers.utils.logging.set_verbosity_error()  # no dtype-cast notices in the table
    if args.threads:
        torch.set_num_threads(args.threads)

    from bridge.bus import Bus
    from bridge.engine import Engine, GenerationRequest
    from bridge.models.loader import LoadedModel, pick_device, pick_dtype
    from bridge.models.resolve import ModelSource

    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    blocks = tuple(int(b) for b in args.blocks.split(",")) if args.blocks else None
    if args.arch in ("sd3", "flux"):
        pipe, tiny = (build_flux if args.arch == "flux" else build_sd3)(device, dtype, blocks)
    else:
        pipe, tiny = (build_sdxl if args.arch == "sdxl" else build)(device, dtype)
    family = {"sd15": "sd", "sdxl": "sdxl", "sd3": "sd3", "flux": "flux"}[args.arch]
    engine = Engine(LoadedModel(pipe, ModelSource("folder", str(tiny), f"{args.arch}-architecture-random"), device, dtype, family))
    guidance = {"sdxl": 5.0, "sd3": 7.0, "flux": 0.0}.get(args.arch, 7.5)  # schnell: no CFG
    prompt = "a red apple on a wooden table, studio light"
    req = engine.validate(GenerationRequest(prompt, seed=7, steps=args.steps, guidance=guidance, width=args.size, height=args.size))
    guidance_kwargs = engine.family.guidance_kwargs(guidance, "", engine.uses_cfg(guidance))

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def plain():
        with torch.inference_mode():
            return pipe(prompt, num_inference_steps=args.steps, width=args.size, height=args.size,
                        generator=torch.Generator("cpu").manual_seed(7), output_type="np", **guidance_kwargs).images[0]

    def captured():
        end = engine.generate(req, Bus())
        assert end.status == "completed", end.error
        return end.image

    from dataclasses import replace

    from bridge.regions import from_text

    side, c = 8 * engine.family.vae_factor, args.size // 2  # 8 × 8 latent pixels, centred
    box_req = engine.validate(replace(req, regions=(from_text(f"box:{c - side // 2},{c - side // 2},{c + side // 2},{c + side // 2}"),)))

    def box():
        end = engine.generate(box_req, Bus())
        assert end.status == "completed", end.error
        return end.image

    concepts_req = engine.validate(replace(req, concepts=tuple(args.concepts.split(",")))) \
        if args.concepts and engine.family.has_concept_maps else None

    def concepts():
        end = engine.generate(concepts_req, Bus())
        assert end.status == "completed", end.error
        return end.image

    variants = {"plain": plain, "captured": captured, **({"box": box} if args.box else {}),
                **({"concepts": concepts} if concepts_req else {})}
    times = {k: [] for k in variants}
    cpu = {k: [] for k in variants}
    peaks = {k: [] for k in variants}
    growth = {k: [] for k in variants}
    images = {k: v() for k, v in variants.items()}  # warm-up, and the outputs to compare
    again = {}  # each variant's last timed output: plain against plain says what run-to-run noise is
    for _ in range(args.repeats):
        for name, fn in variants.items():
            with PeakMemory(device) as mem:
                sync()
                t, c = time.perf_counter(), time.process_time()
                again[name] = fn()
                sync()
                times[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
            peaks[name].append(mem.peak)
            growth[name].append(mem.peak - mem.base)

    # The capture's own work, timed where it happens (per layer and step; CUDA events on a GPU).
    from bridge.attention.timer import CaptureTimer

    timer = engine.capture_timer = CaptureTimer(device)
    for _ in range(args.repeats):
        captured()
    engine.capture_timer = None
    work = timer.per_step()
    concept_timer = engine.capture_timer = CaptureTimer(device) if concepts_req else None
    for _ in range(args.repeats if concepts_req else 0):
        concepts()
    engine.capture_timer = None
    plain_step = statistics.median(times["plain"]) / args.steps
    by_name: dict = {}
    for step in timer.steps:
        for name, seconds in step.items():
            by_name.setdefault(name, []).append(seconds)

    plain_img = np.clip(np.rint(images["plain"] * 255), 0, 255).astype(np.uint8)
    diff = int(np.abs(plain_img.astype(int) - images["captured"].astype(int)).max())
    layers = len(engine.family.attention_sites())
    gpu = torch.cuda.get_device_name() if device.startswith("cuda") else f"{torch.get_num_threads()} CPU threads"
    arch = {"sdxl": "SDXL UNet", "sd15": "SD 1.5 UNet", "sd3": "SD3 medium transformer", "flux": "FLUX.1 schnell transformer"}[args.arch]
    kept = f" ({args.blocks} blocks kept)" if args.blocks else ""
    print(f"device: {device} ({gpu}), dtype {str(dtype).replace('torch.', '')}, {arch}{kept} (random weights), "
          f"{args.size}×{args.size}, {args.steps} steps, guidance {guidance:g}, {layers} {engine.family.attention_kind} layers captured, "
          f"{len(engine.validate(req).prompt.split())}-word prompt, {args.repeats} timed runs each")
    mb = 1 / 2**20
    print(f"{'':10}{'median s':>10}{'min s':>9}{'CPU s':>9}{'peak MiB':>11}{'growth MiB':>12}")
    for name in variants:
        print(f"{name:10}{statistics.median(times[name]):>10.3f}{min(times[name]):>9.3f}{statistics.median(cpu[name]):>9.3f}"
              f"{max(peaks[name]) * mb:>11.1f}{max(growth[name]) * mb:>12.1f}")
    t_ratio = statistics.median(times["captured"]) / statistics.median(times["plain"])
    m_ratio = max(peaks["captured"]) / max(peaks["plain"])
    print(f"captured/plain: wall time ×{t_ratio:.3f} (median), ×{min(times['captured']) / min(times['plain']):.3f} (best); "
          f"process CPU time ×{statistics.median(cpu['captured']) / statistics.median(cpu['plain']):.3f}; peak memory ×{m_ratio:.3f}; working memory above the model: {max(growth['plain']) * mb:.1f} → "
          f"{max(growth['captured']) * mb:.1f} MiB")
    rerun = int(np.abs(plain_img.astype(int) - np.clip(np.rint(again["plain"] * 255), 0, 255).astype(int)).max())
    print(f"final images: max pixel difference plain vs captured = {diff} (of 255); plain vs plain again = {rerun} "
          "(the device's own run-to-run difference)")
    ms = 1000
    print(f"capture's own work per step ({len(work)} steps timed): median {statistics.median(work) * ms:.2f} ms "
          f"(min–max {min(work) * ms:.2f}–{max(work) * ms:.2f}) against a plain step of {plain_step * ms:.1f} ms: "
          f"×{1 + statistics.median(work) / plain_step:.3f} (×{1 + min(work) / plain_step:.3f}–×{1 + max(work) / plain_step:.3f}; target ≤ 1.03)")
    costly = sorted(by_name.items(), key=lambda kv: -statistics.median(kv[1]))[:4]
    print("  largest parts (median per step): " + ", ".join(f"{n} {statistics.median(v) * ms:.2f} ms" for n, v in costly))
    if args.box:
        b_ratio = statistics.median(times["box"]) / statistics.median(times["plain"])
        b_cpu = statistics.median(cpu["box"]) / statistics.median(cpu["plain"])
        b_diff = int(np.abs(plain_img.astype(int) - images["box"].astype(int)).max())
        print(f"box/plain (one 64-latent-pixel self-attention region): wall time ×{b_ratio:.3f} (median), process CPU "
              f"time ×{b_cpu:.3f}; peak memory ×{max(peaks['box']) / max(peaks['plain']):.3f}; max pixel difference {b_diff}")
    if concepts_req:
        c_ratio = statistics.median(times["concepts"]) / statistics.median(times["plain"])
        c_cpu = statistics.median(cpu["concepts"]) / statistics.median(cpu["plain"])
        c_diff = int(np.abs(plain_img.astype(int) - images["concepts"].astype(int)).max())
        method = "OVAM" if engine.family.name in ("sd", "sdxl") else "ConceptAttention"
        encode = []
        for _ in range(max(2, args.repeats)):  # the one-off part: encoding concepts never seen before
            engine.family.__dict__.pop("_concept_cache", None)
            sync()
            t = time.perf_counter()
            with torch.inference_mode():
                if method == "ConceptAttention":
                    engine.family.concept_embeddings(concepts_req.concepts)
                else:
                    engine.family.text_states(" ".join(concepts_req.concepts))
            sync()
            encode.append(time.perf_counter() - t)
        per_step = (statistics.median(times["concepts"]) - statistics.median(times["captured"])) / args.steps
        print(f"concepts/plain ({len(concepts_req.concepts)} concepts, {method}): wall time ×{c_ratio:.3f} (median), process CPU "
              f"time ×{c_cpu:.3f}; peak memory ×{max(peaks['concepts']) / max(peaks['plain']):.3f}; max pixel difference {c_diff}")
        concept_work = concept_timer.per_step()
        print(f"  timed runs reuse the concepts' encodings (cached per name, as live runs do); encoding new ones costs "
              f"{statistics.median(encode) * ms:.0f} ms once; per step over captured (wall time, noisy): {per_step * ms:.1f} ms; "
              f"capture's own work with concepts, timed where it happens: {statistics.median(concept_work) * ms:.2f} ms a step = "
              f"×{1 + statistics.median(concept_work) / plain_step:.3f} of a plain step")


if __name__ == "__main__":
    main()
