"""Write the trained networks as a standard StableDiffusionPipeline folder."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import torch

from ...models.defaults import write_defaults
from .architectures import make_train_scheduler

log = logging.getLogger("train_shapes")


def save_pipeline(out: Path, vae, unet, text, tokenizer_dir: Path, meta: dict, prediction: str = "v_prediction",
                  guidance: float | None = None, vae_every: int | None = None):
    """Write a standard StableDiffusionPipeline folder with float16 weights (and, given ``guidance``,
    the bridge_defaults.json that makes it the folder's default guidance scale and preview decode)."""
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
        write_defaults(tmp, guidance, vae_every)
    return replace_folder(tmp, out)


def replace_folder(tmp: Path, out: Path) -> int:
    """Put the finished folder ``tmp`` (made next to ``out``) in ``out``'s place; its size in bytes."""
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log.info("saved %s (%.2f MB)", out, size / 1e6)
    return size
