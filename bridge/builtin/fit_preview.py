"""Fit a built-in model's linear preview on its own generations and write its latent_rgb.json.

    python -m bridge.builtin.fit_preview                  # the shapes model
    python -m bridge.builtin.fit_preview --model /tmp/shapes     # a folder train_shapes wrote

The shapes model's VAE has a weak KL term, so the latents its UNet generates sit far from the
ones its encoder produces (channel means 1.8 vs 0.4): a fit on encoded images does not carry over
to what the scheduler holds.  So the preview is fitted where it is used: the final latents of
generated images against their VAE decodes, and checked on held-out prompts.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("fit_preview")


def generate(pipe, prompts, seed: int, steps: int, guidance: float, progress: bool = True):
    """Final latents (N, C, h, w) and decoded images (N, 3, H, W) in [-1, 1], float32 on the CPU."""
    import torch
    from tqdm import tqdm

    from ..preview import vae_decode

    latents, images = [], []
    for k, prompt in enumerate(tqdm(prompts, desc="generate", disable=not progress)):
        out = pipe(prompt, num_inference_steps=steps, guidance_scale=guidance, output_type="latent",
                   generator=torch.Generator("cpu").manual_seed(seed + k))
        z = out.images.float()
        images.append(vae_decode(pipe.vae, z / pipe.vae.config.scaling_factor).float().clamp(-1, 1).cpu())
        latents.append(z.cpu())
    return torch.cat(latents), torch.cat(images)


def errors(fit, latents, images) -> tuple[float, float]:
    """RMS error (in [-1, 1] units) of the preview against the pooled decodes, and of the best flat colour."""
    import torch
    import torch.nn.functional as F

    from ..preview import Previewer

    previewer = Previewer(fit, "cpu")
    target = F.adaptive_avg_pool2d(images, latents.shape[-2:]).permute(0, 2, 3, 1)
    predicted = torch.stack([previewer.linear(z[None]) / 127.5 - 1 for z in latents])
    flat = target.reshape(-1, 3).mean(0)
    return float(((predicted - target) ** 2).mean().sqrt()), float(((target - flat) ** 2).mean().sqrt())


def main(argv=None) -> int:
    from ..models import load_model
    from ..preview import fit_pairs, save_latent_rgb
    from . import shapes_data as sd

    p = argparse.ArgumentParser(prog="python -m bridge.builtin.fit_preview", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="builtin", help="a built-in model or a pipeline folder trained on shapes (default: %(default)s)")
    p.add_argument("--prompts", type=int, default=48, help="generated images to fit on (default: %(default)s)")
    p.add_argument("--held-out", type=int, default=16, help="other prompts to check the fit on (default: %(default)s)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    loaded = load_model(args.model, device="cpu", progress=args.progress)
    if loaded.source.kind != "folder":
        p.error("fit_preview writes latent_rgb.json into a pipeline folder; hub models and single files fit theirs when they load")
    guidance = loaded.defaults.get("guidance", 7.5)
    fit_prompts = [s.caption for s in sd.sample_scenes(11, args.prompts)]
    held_prompts = [s.caption for s in sd.sample_scenes(12, args.held_out)]
    fit = fit_pairs(*generate(loaded.pipe, fit_prompts, 0, args.steps, guidance, args.progress))
    rmse, flat = errors(fit, *generate(loaded.pipe, held_prompts, 1000, args.steps, guidance, args.progress))
    log.info("held-out RMS error %.3f (best flat colour %.3f) over %d prompts", rmse, flat, len(held_prompts))
    save_latent_rgb(Path(loaded.source.location), fit)
    log.info("wrote %s", Path(loaded.source.location) / "latent_rgb.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
