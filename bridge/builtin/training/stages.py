"""The two training stages (VAE, then UNet with text encoder), their learning rate and a duration estimate."""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from .architectures import make_text_encoder, make_train_scheduler, make_unet, make_vae
from .captions import CaptionEncoder
from .dataset import SceneStream, TrainingSet, encode_scenes
from .grounding import grounding_loss, noise_tilt, self_grounding_loss, training_processors
from .precision import mixed_precision

log = logging.getLogger("train_shapes")


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
    if args.init is None:
        vae_times: list[float] = []
        vae = train_vae(args, device, stop_after=warmup + timed + 1, times=vae_times)
        per_stage.append(("vae", per_step(vae_times), args.vae_steps))
    else:
        vae = load_vae(args.init).to(device)
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


class Ema:
    """An exponential moving average of ``params`` (decay warming up from 0.1), copied into them at the end."""

    def __init__(self, params, decay: float):
        self.params, self.decay = params, decay
        self.shadow = [p.detach().clone() for p in params]

    def update(self, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1 - decay)

    def apply(self) -> None:
        with torch.no_grad():
            for p, e in zip(self.params, self.shadow):
                p.copy_(e)


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


def load_vae(folder):
    """A saved pipeline folder's VAE, in float32 for training."""
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(folder, subfolder="vae").float()


def load_denoiser(folder):
    """A saved pipeline folder's UNet and text encoder, in float32 for training."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet").float()
    return unet, CLIPTextModel.from_pretrained(folder, subfolder="text_encoder").float()


def train_denoiser(args, data: TrainingSet, tokenizer, device, stop_after=None, times=None):
    from tqdm import tqdm

    torch.manual_seed(args.seed + 1)
    if args.init is not None:  # fine-tuning: start from a saved pipeline's weights
        unet, text = load_denoiser(args.init)
        unet, text = unet.to(device), text.to(device)
    else:
        unet = make_unet(args.widths).to(device)
        text = make_text_encoder(args.merges, int(tokenizer.model_max_length)).to(device)
    text.set_attn_implementation("eager")  # explicit attention: faster at this size, and matches the UNet's
    noise_sched = make_train_scheduler(args.prediction)
    probs_store: list = []
    self_store: list = []
    default_processors = unet.attn_processors
    unet.set_attn_processor(training_processors(unet, probs_store if args.ground_weight > 0 else None,
                                                self_store if args.self_ground_weight > 0 else None))
    if args.freeze_text:
        text.requires_grad_(False)
    params = list(unet.parameters()) + ([] if args.freeze_text else list(text.parameters()))
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    ema = Ema(params, args.ema)
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
        self_store.clear()
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
        self_ground = torch.zeros((), device=device)
        if args.self_ground_weight > 0:
            self_ground = self_grounding_loss(self_store, masks, args.self_cover_weight, args.self_query_power)
            loss = loss + args.self_ground_weight * self_ground
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update(step)
        if step % args.log_every == 0 or step == args.steps - 1:
            bar.set_postfix(mse=f"{mse.item():.4f}", ground=f"{ground.item():.3f}", self_ground=f"{self_ground.item():.3f}",
                            lr=f"{lr:.1e}")
            if not args.progress:
                log.info("unet step %d mse %.4f ground %.3f self ground %.3f (%.1f s)", step, mse.item(), ground.item(),
                         self_ground.item(), time.time() - t_start)
    probs_store.clear()
    self_store.clear()
    ema.apply()
    unet.set_attn_processor(default_processors)
    return unet.eval(), text.eval()
