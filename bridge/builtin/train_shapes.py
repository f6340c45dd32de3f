"""Train the built-in shapes model: a small latent text-to-image diffusion model.

    python -m bridge.builtin.train_shapes                       # the shipped recipe, on the CPU
    python -m bridge.builtin.train_shapes --device cuda         # the same recipe on a GPU
    python -m bridge.builtin.train_shapes --estimate            # projected duration, nothing saved

The result is an ordinary Stable Diffusion pipeline folder (UNet with cross-attention, CLIP text
encoder and CLIP BPE tokenizer, AutoencoderKL, scheduler) written to
``bridge/builtin/models/shapes/`` with float16 weights, loaded by the same code as any model.

Three stages, on images drawn by :mod:`bridge.builtin.shapes_data`:

1. the VAE learns to reconstruct 64×64 images from 4×16×16 latents;
2. a fixed set of scenes is drawn and encoded once (latents, captions, object masks), so the
   denoiser's steps spend no time on drawing or encoding;
3. the UNet and the text encoder learn together to denoise those latents (v-prediction with
   min-SNR weighting, 10 % empty captions for classifier-free guidance), so the caption words'
   token states are shaped by what the UNet draws.  Because every object's mask is known, a
   grounding term pulls the cross-attention of each colour and shape token inside its object's
   mask (TokenCompose's token loss, Wang et al. 2024) and over all of it (its pixel loss): this
   is what makes the model's attention maps cover the objects they name.

Everything is seeded; the exact command and numbers of the shipped weights are in docs/MODEL.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bridge.tokenizers import clip_bpe
from bridge.builtin import shapes_data as sd
from bridge.models.defaults import MAX_GUIDANCE, write_defaults

log = logging.getLogger("train_shapes")

DEFAULT_OUT = Path(__file__).with_name("models") / "shapes"
MERGES = 4000  # first K CLIP merges: every caption word is one or two real CLIP tokens
TEXT_WIDTH = 128
# The longest caption is 18 tokens; 32 positions instead of CLIP's 77 cut the text encoder's and
# the cross-attention's work by more than half, in training and in every live step.
MAX_TOKENS = 32
LATENT_SIZE = sd.IMAGE_SIZE // 4
# At Stable Diffusion's 7.5 this model over-saturates: ragged edges, and some colour-shape pairs
# ("a green triangle") come out in the wrong colour.  3 was chosen on validation prompts.
GUIDANCE = 3.0


# --- model definitions ------------------------------------------------------------------------

def make_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64),  # three levels: 64×64 → 16×16, factor 4
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=sd.IMAGE_SIZE,
        mid_block_add_attention=False,
    )


def make_unet(widths=(32, 64)):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * len(widths),
        up_block_types=("CrossAttnUpBlock2D",) * len(widths),
        block_out_channels=tuple(widths),
        layers_per_block=1,
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=4,  # diffusers reads this as the number of heads
        norm_num_groups=32,
    )


def make_text_encoder(merges: int, max_tokens: int = MAX_TOKENS):
    from transformers import CLIPTextConfig, CLIPTextModel

    vocab = clip_bpe.vocab_size(merges)
    config = CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=TEXT_WIDTH,
        intermediate_size=4 * TEXT_WIDTH,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=max_tokens,
        bos_token_id=vocab - 2,
        eos_token_id=vocab - 1,
        pad_token_id=vocab - 1,
    )
    return CLIPTextModel(config)


def make_train_scheduler(prediction_type: str = "v_prediction"):
    from diffusers import DDPMScheduler

    # Stable Diffusion's noise schedule, so the usual inference schedulers apply unchanged.
    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         prediction_type=prediction_type)


def mixed_precision(device, enabled: bool):
    """bfloat16 autocast where the hardware runs it natively, otherwise nothing."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def bf16_native(device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:  # AVX512-BF16 / AMX: oneDNN runs bfloat16 convolutions and matmuls natively
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


# --- captions → token ids and word ownership ------------------------------------------------------

class CaptionEncoder:
    """Token ids of captions plus, per token, which object (if any) the token names.

    Each caption word is tokenized on its own (and cached: captions use a few dozen words):
    CLIP splits text into words before BPE, so the concatenation equals tokenizing the whole
    caption (tests/test_shapes_train.py checks this).
    """

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.length = int(tokenizer.model_max_length)
        self.words: dict[str, list[int]] = {}

    def word_ids(self, word: str) -> list[int]:
        if word not in self.words:
            self.words[word] = self.tok(word, add_special_tokens=False)["input_ids"]
        return self.words[word]

    def encode(self, pieces) -> tuple[list[int], list[int]]:
        """ids and owners of one caption, padded to the encoder's length."""
        ids, owner = [self.tok.bos_token_id], [-1]
        for word, obj in pieces:
            w_ids = self.word_ids(word)
            ids += w_ids
            owner += [obj] * len(w_ids)
        ids.append(self.tok.eos_token_id)
        owner.append(-1)
        pad = self.length - len(ids)
        if pad < 0:
            raise ValueError(f"caption of {len(ids)} tokens is longer than the encoder's {self.length}")
        return ids + [self.tok.pad_token_id] * pad, owner + [-1] * pad

    def batch(self, scenes):
        """ids (B, L) and owner (B, L): owner is the object index of each token, −1 for others.

        Guidance dropout happens later, on the encoded training set (``TrainingSet.empty_ids``).
        """
        pairs = [self.encode(scene.pieces) for scene in scenes]
        return torch.tensor([i for i, _ in pairs]), torch.tensor([o for _, o in pairs])


# --- attention during training ------------------------------------------------------------------

class TrainingAttention:
    """Explicit attention that can keep the cross-attention probabilities.

    Training only: the shipped pipeline uses diffusers' default processors.  At these head sizes
    (8–16 channels) the explicit form is also faster on a CPU than the fused kernel.
    """

    def __init__(self, store: list | None = None):
        self.store = store

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        b, n, _ = hidden_states.shape
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q = attn.to_q(hidden_states)
        k = attn.to_k(context)
        v = attn.to_v(context)
        h = attn.heads
        q, k, v = (x.view(b, -1, h, x.shape[-1] // h).transpose(1, 2) for x in (q, k, v))
        probs = torch.softmax((q * attn.scale) @ k.transpose(-1, -2), dim=-1)  # (B, heads, N, L)
        if self.store is not None:
            self.store.append(probs.float().mean(1))
        out = (probs.to(v.dtype) @ v).transpose(1, 2).reshape(b, n, -1)
        return attn.to_out[1](attn.to_out[0](out))


def training_processors(unet, store: list | None):
    """Explicit attention everywhere; cross-attention layers also fill ``store`` when given."""
    return {
        name: TrainingAttention(store if name.endswith("attn2.processor") else None)
        for name in unet.attn_processors
    }


def grounding_loss(probs_list, masks, owner, pixel_weight: float = 0.0, sample_weight=None):
    """Mean over (token, object) pairs of (1 − share of the token's attention inside the mask)²,
    plus ``pixel_weight`` × the pixel term.  ``sample_weight`` (B,), optional, scales each
    training image's share of both terms (see :func:`noise_tilt`).

    The first (TokenCompose's token loss) only punishes attention outside the mask, so a token may
    settle on its object's centre.  The pixel term (TokenCompose's pixel loss) is the binary cross
    entropy between the token's per-pixel probability and the mask, which asks for the whole
    object to be covered.

    probs_list: (B, N, L) per cross-attention layer; masks (B, K, H, W) object coverage at any
    resolution (pooled to each layer's); owner (B, L).
    """
    k = masks.shape[1]
    assign = (owner.unsqueeze(-1) == torch.arange(k, device=owner.device)).float()  # (B, L, K)
    if assign.sum() == 0:
        return masks.new_zeros(())
    w = torch.ones(owner.shape[0], device=owner.device) if sample_weight is None else sample_weight.float()
    pooled: dict[int, torch.Tensor] = {}
    losses = []
    for probs in probs_list:
        side = int(math.isqrt(probs.shape[1]))  # training latents are square
        if side not in pooled:
            pooled[side] = F.adaptive_avg_pool2d(masks.float(), side).flatten(2)  # (B, K, N)
        inside = torch.einsum("bnt,bkn->btk", probs, pooled[side])
        share = inside / probs.sum(1).unsqueeze(-1).clamp_min(1e-8)
        loss = ((1 - share) ** 2 * assign * w.view(-1, 1, 1)).sum() / assign.sum()
        if pixel_weight > 0:
            token_mask = torch.einsum("btk,bkn->btn", assign, pooled[side])  # each owned token's object mask
            owned = assign.sum(-1)  # (B, L): 1 where the token names an object
            p = probs.transpose(1, 2).clamp(1e-6, 1 - 1e-6)  # (B, L, N)
            bce = F.binary_cross_entropy(p, token_mask, reduction="none").mean(-1)
            loss = loss + pixel_weight * (bce * owned * w.view(-1, 1)).sum() / owned.sum()
        losses.append(loss)
    return torch.stack(losses).mean()


def noise_tilt(t, num_timesteps: int, tilt: float):
    """Per-image grounding weight 1 + tilt·(2t/T − 1): mean 1 over uniform t, and for tilt 1
    it runs from 0 at t = 0 to 2 at t = T.

    Tilting towards high noise is for the cumulative (all-step) map: a trained model's low-noise
    steps already attend inside the objects, while its high-noise steps, where the layout is
    decided, stay diffuse and blur the sum.  Off in the shipped recipe: at the model's guidance
    (3) a full run with tilt 1 scored within run-to-run variation of the shipped weights
    (docs/MODEL.md).
    """
    return 1 + tilt * (2 * t.float() / num_timesteps - 1)


# --- data -------------------------------------------------------------------------------------

class SceneStream:
    """Endless batches of (scenes, images, masks) from one seeded generator."""

    def __init__(self, seed: int, batch: int, device):
        self.rng = np.random.default_rng(seed)
        self.batch = batch
        self.device = device
        self.gen = torch.Generator(device=device).manual_seed(seed)

    def next(self):
        scenes = [sd.sample_scene(self.rng) for _ in range(self.batch)]
        images, masks = sd.rasterise(scenes, self.device, self.gen)
        return scenes, images, masks


@dataclass
class TrainingSet:
    """Scenes drawn and encoded once: what every denoiser step samples from."""

    latents: torch.Tensor  # (N, 4, 16, 16), already scaled by the VAE's scaling factor
    masks: torch.Tensor  # (N, K, 16, 16) float16 object coverage at latent resolution
    ids: torch.Tensor  # (N, L) caption token ids
    owner: torch.Tensor  # (N, L) object index of each token, −1 for others
    empty_ids: torch.Tensor  # (L,) the empty caption, for guidance dropout

    def __len__(self) -> int:
        return self.latents.shape[0]


def encode_scenes(vae, encoder: CaptionEncoder, args, device, limit: int | None = None, bar=None) -> TrainingSet:
    """Draw ``args.scenes`` scenes (seed + 2) and encode them: latents, masks and captions."""
    count = args.scenes if limit is None else limit
    stream = SceneStream(args.seed + 2, 512, device)
    parts: dict[str, list] = {"latents": [], "masks": [], "ids": [], "owner": []}
    done = 0
    while done < count:
        scenes, x, masks = stream.next()
        take = min(len(scenes), count - done)
        scenes, x, masks = scenes[:take], x[:take], masks[:take]
        with torch.no_grad(), mixed_precision(device, args.bf16):
            z = vae.encode(x).latent_dist.mean.float() * vae.config.scaling_factor
        ids, owner = encoder.batch(scenes)
        parts["latents"].append(z)
        parts["masks"].append(F.adaptive_avg_pool2d(masks, LATENT_SIZE).half())
        parts["ids"].append(ids.to(device))
        parts["owner"].append(owner.to(device))
        done += take
        if bar is not None:
            bar.update(take)
    empty, _ = encoder.encode([])
    return TrainingSet(**{k: torch.cat(v) for k, v in parts.items()}, empty_ids=torch.tensor(empty, device=device))


# --- training ---------------------------------------------------------------------------------

def _tick(times, device):
    """Record a wall-clock time per step (for --estimate)."""
    if times is not None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter())


def estimate(args, device, tokenizer, warmup: int = 3, timed: int = 6) -> float:
    """Time a few steps of each stage and project the whole recipe's duration (seconds)."""

    def per_step(times):  # mean step time after the warm-up steps
        return (times[-1] - times[warmup]) / (len(times) - 1 - warmup)

    per_stage = []
    vae_times: list[float] = []
    vae = train_vae(args, device, stop_after=warmup + timed + 1, times=vae_times)
    per_stage.append(("vae", per_step(vae_times), args.vae_steps))
    sample = 2048
    t0 = time.perf_counter()
    data = encode_scenes(vae, CaptionEncoder(tokenizer), args, device, limit=sample)
    per_stage.append(("scenes", (time.perf_counter() - t0) / sample, args.scenes))
    unet_times: list[float] = []
    train_denoiser(args, data, tokenizer, device, stop_after=warmup + timed + 1, times=unet_times)
    per_stage.append(("unet", per_step(unet_times), args.steps))
    total = 0.0
    for name, each, count in per_stage:
        total += each * count
        log.info("estimate %s: %.4f s × %d = %.1f min", name, each, count, each * count / 60)
    log.info("estimate: the whole recipe takes about %.1f min on %s with %d threads", total / 60, device, torch.get_num_threads())
    return total


def lr_at(step: int, total: int, peak: float, warmup: int = 200) -> float:
    """Linear warm-up, then cosine decay to 10 % of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def train_vae(args, device, stop_after=None, times=None):
    from tqdm import tqdm

    torch.manual_seed(args.seed)
    vae = make_vae().to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    stream = SceneStream(args.seed, args.vae_batch, device)
    bar = tqdm(range(args.vae_steps if stop_after is None else stop_after), desc="vae", disable=not args.progress)
    for step in bar:
        _tick(times, device)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.vae_steps, args.vae_lr, warmup=100)
        _, x, _ = stream.next()
        with mixed_precision(device, args.bf16):
            post = vae.encode(x).latent_dist
            rec = vae.decode(post.sample()).sample.float()
        mse = F.mse_loss(rec, x)
        kl = post.kl().float().mean() / x[0].numel()
        loss = mse + 0.1 * F.l1_loss(rec, x) + args.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % args.log_every == 0 or step == args.vae_steps - 1:
            bar.set_postfix(mse=f"{mse.item():.4f}", kl=f"{kl.item():.2f}")
            if not args.progress:
                log.info("vae step %d mse %.4f kl %.2f", step, mse.item(), kl.item())
    vae.eval().requires_grad_(False)
    # Scale latents to unit variance, as Stable Diffusion does with its 0.18215.
    with torch.no_grad(), mixed_precision(device, args.bf16):
        z = torch.cat([vae.encode(stream.next()[1]).latent_dist.mean.float() for _ in range(8)])
    # force_upcast off: this small VAE is exact enough in float16, and decoding stays in the
    # pipeline's dtype.
    vae.register_to_config(scaling_factor=float(1.0 / z.std()), force_upcast=False)
    log.info("vae done: reconstruction mse %.4f, latent scaling factor %.4f", mse.item(), vae.config.scaling_factor)
    return vae


def train_denoiser(args, data: TrainingSet, tokenizer, device, stop_after=None, times=None):
    from tqdm import tqdm

    torch.manual_seed(args.seed + 1)
    unet = make_unet(args.widths).to(device)
    text = make_text_encoder(args.merges, int(tokenizer.model_max_length)).to(device)
    text.set_attn_implementation("eager")  # explicit attention: faster at this size, and matches the UNet's
    noise_sched = make_train_scheduler(args.prediction)
    probs_store: list = []
    default_processors = unet.attn_processors
    unet.set_attn_processor(training_processors(unet, probs_store if args.ground_weight > 0 else None))
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    ema = [p.detach().clone() for p in params]
    gen = torch.Generator(device="cpu").manual_seed(args.seed + 2)
    rng = np.random.default_rng(args.seed + 3)
    alphas = noise_sched.alphas_cumprod.to(device)
    order = torch.randperm(len(data), generator=gen)
    cursor = 0
    bar = tqdm(range(args.steps if stop_after is None else stop_after), desc="unet", disable=not args.progress)
    t_start = time.time()
    for step in bar:
        _tick(times, device)
        lr = lr_at(step, args.steps, args.lr)
        for g in opt.param_groups:
            g["lr"] = lr
        if cursor + args.batch > len(order):  # a new epoch: a fresh order of the scenes
            order, cursor = torch.randperm(len(data), generator=gen), 0
        idx = order[cursor : cursor + args.batch].to(device)
        cursor += args.batch
        z, masks, ids, owner = data.latents[idx], data.masks[idx], data.ids[idx].clone(), data.owner[idx].clone()
        drop = torch.from_numpy(rng.random(len(idx)) < args.drop_caption).to(device)
        ids[drop] = data.empty_ids
        owner[drop] = -1
        noise = torch.randn_like(z)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (z.shape[0],), device=device)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * z + (1 - a).sqrt() * noise
        probs_store.clear()
        with mixed_precision(device, args.bf16):
            cond = text(ids).last_hidden_state
            pred = unet(noisy, t, cond).sample.float()
        # v-prediction (Salimans & Ho 2022, as in Stable Diffusion 2): unlike epsilon, its error
        # does not blow up at high noise, where a small model has to decide the layout.
        target = noise if args.prediction == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * z
        per_sample = ((pred - target) ** 2).mean(dim=(1, 2, 3))
        if args.min_snr > 0:
            # min-SNR-γ weighting (Hang et al. 2023): easy, low-noise steps stop dominating.
            snr = (a / (1 - a)).view(-1)
            per_sample = per_sample * snr.clamp(max=args.min_snr) / (snr if args.prediction == "epsilon" else snr + 1)
        mse = per_sample.mean()
        loss = mse
        ground = torch.zeros((), device=device)
        if args.ground_weight > 0:
            tilt = noise_tilt(t, noise_sched.config.num_train_timesteps, args.ground_noise_tilt)
            ground = grounding_loss(probs_store, masks, owner, args.pixel_weight, tilt)
            loss = loss + args.ground_weight * ground
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
        if step % args.log_every == 0 or step == args.steps - 1:
            bar.set_postfix(mse=f"{mse.item():.4f}", ground=f"{ground.item():.3f}", lr=f"{lr:.1e}")
            if not args.progress:
                log.info("unet step %d mse %.4f ground %.3f (%.1f s)", step, mse.item(), ground.item(), time.time() - t_start)
    probs_store.clear()
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e)
    unet.set_attn_processor(default_processors)
    return unet.eval(), text.eval()


def save_pipeline(out: Path, vae, unet, text, tokenizer_dir: Path, meta: dict, prediction: str = "v_prediction",
                  guidance: float | None = None):
    """Write a standard StableDiffusionPipeline folder with float16 weights (and, given ``guidance``,
    the bridge_defaults.json that makes it the folder's default guidance scale)."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    scheduler = DPMSolverMultistepScheduler.from_config(make_train_scheduler(prediction).config, steps_offset=1, timestep_spacing="trailing")
    pipe = StableDiffusionPipeline(
        vae=vae.to("cpu", torch.float16),
        text_encoder=text.to("cpu", torch.float16),
        tokenizer=CLIPTokenizer.from_pretrained(tokenizer_dir),
        unet=unet.to("cpu", torch.float16),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    tmp = Path(tempfile.mkdtemp(prefix="shapes-", dir=out.parent if out.parent.exists() else None))
    pipe.save_pretrained(tmp, safe_serialization=True)
    (tmp / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    if guidance is not None:
        write_defaults(tmp, guidance)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log.info("saved %s (%.2f MB)", out, size / 1e6)
    return size


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m bridge.builtin.train_shapes",
        description="Train the built-in shapes text-to-image model (seeded; the defaults are the shipped recipe).",
        epilog="Example: python -m bridge.builtin.train_shapes --device cuda --out /tmp/shapes",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="pipeline folder to write (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="bf16 autocast (weights stay float32); auto: bf16 where the device runs it natively "
                        "(CUDA, CPUs with AVX512-BF16 or AMX), else fp32 (default: %(default)s)")
    p.add_argument("--vae-steps", type=int, default=2000)
    p.add_argument("--vae-batch", type=int, default=16)
    p.add_argument("--vae-lr", type=float, default=2e-3)
    p.add_argument("--kl-weight", type=float, default=1e-4, help="weight of the VAE's KL term (per pixel value)")
    p.add_argument("--scenes", type=int, default=60000, help="scenes drawn and encoded once for the denoiser")
    p.add_argument("--steps", type=int, default=3600, help="denoiser training steps")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--prediction", choices=("v_prediction", "epsilon"), default="v_prediction", help="what the UNet predicts")
    p.add_argument("--min-snr", type=float, default=5.0, help="min-SNR-γ loss weighting (0: plain MSE)")
    p.add_argument("--drop-caption", type=float, default=0.1)
    p.add_argument("--ground-weight", type=float, default=0.1, help="weight of the attention grounding term (0: off)")
    p.add_argument("--pixel-weight", type=float, default=1.0,
                   help="weight, inside the grounding term, of the per-pixel coverage loss (0: off; see docs/MODEL.md)")
    p.add_argument("--ground-noise-tilt", type=float, default=0.0,
                   help="shift the grounding term towards noisy timesteps: per-image weight 1 + tilt·(2t/1000 − 1), "
                        "0 flat, 1 from 0 (clean) to 2 (pure noise); must lie in 0..1 (default: %(default)s)")
    p.add_argument("--guidance", type=float, default=GUIDANCE,
                   help="guidance scale the saved folder recommends (its bridge_defaults.json); this small model "
                        "over-saturates at Stable Diffusion's 7.5 (default: %(default)s, see docs/MODEL.md)")
    p.add_argument("--widths", type=int, nargs="+", default=[32, 64], help="UNet channels per level")
    p.add_argument("--merges", type=int, default=MERGES, help="first K CLIP BPE merges kept in the vocabulary")
    p.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help="text encoder positions (captions need 18)")
    p.add_argument("--estimate", action="store_true", help="time a few steps of each stage, print the projected duration, save nothing")
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--no-progress", dest="progress", action="store_false", help="log lines instead of bars")
    args = p.parse_args(argv)
    if not 0.0 <= args.ground_noise_tilt <= 1.0:
        p.error(f"--ground-noise-tilt must lie in 0..1 (above 1 some weights turn negative), got {args.ground_noise_tilt}")
    if not 0.0 <= args.guidance <= MAX_GUIDANCE:
        p.error(f"--guidance must lie in 0..{MAX_GUIDANCE:g}, got {args.guidance}")
    return args


def main(argv=None) -> int:
    from tqdm import tqdm

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    args.bf16 = args.precision == "bf16" or (args.precision == "auto" and bf16_native(device))
    log.info("training on %s with %d threads, %s", device, torch.get_num_threads(), "bf16 autocast" if args.bf16 else "fp32")
    # Exact float32 matmuls on GPUs too, so a GPU run follows the CPU recipe closely.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    from transformers import CLIPTokenizer

    tok_dir = Path(tempfile.mkdtemp(prefix="shapes-tok-"))
    clip_bpe.write_clip_tokenizer(tok_dir, args.merges, model_max_length=args.max_tokens)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    if args.estimate:
        estimate(args, device, tokenizer)
        return 0
    t0 = time.time()
    vae = train_vae(args, device)
    t_vae = time.time() - t0
    with tqdm(total=args.scenes, desc="scenes", disable=not args.progress) as bar:
        data = encode_scenes(vae, CaptionEncoder(tokenizer), args, device, bar=bar)
    t_data = time.time() - t0 - t_vae
    log.info("%d scenes drawn and encoded in %.1f s", len(data), t_data)
    unet, text = train_denoiser(args, data, tokenizer, device)
    t_all = time.time() - t0
    log.info("training took %.1f s (vae %.1f s, scenes %.1f s) on %s", t_all, t_vae, t_data, device)
    meta = {
        "command": "python -m bridge.builtin.train_shapes " + " ".join(sys.argv[1:] if argv is None else argv),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "seconds": round(t_all, 1),
        "seconds_by_stage": {"vae": round(t_vae, 1), "scenes": round(t_data, 1), "unet": round(t_all - t_vae - t_data, 1)},
        "torch": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_pipeline(args.out, vae, unet, text, tok_dir, meta, args.prediction, args.guidance)
    shutil.rmtree(tok_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
