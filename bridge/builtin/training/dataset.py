"""The denoiser's training data: procedural scenes drawn once and encoded (latents, masks, captions)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .. import shapes_data as sd
from .architectures import LATENT_SIZE
from .captions import CaptionEncoder
from .precision import mixed_precision


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
