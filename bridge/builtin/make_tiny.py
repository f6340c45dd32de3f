"""Make the tiny built-in model: a real, deterministic Stable Diffusion 1.x-layout diffusers folder.

    python -m bridge.builtin.make_tiny            # writes bridge/builtin/models/tiny/

Random weights from fixed seeds, small dims, so a 20-step 64×64 render takes seconds on two
CPU cores and the folder stays around a megabyte.  It is an ordinary diffusers folder
(model_index.json, unet/, text_encoder/, tokenizer/, vae/, scheduler/), loaded by the same code
as any user's model.  Its images are noise-like; it exists to exercise the whole path offline.
The UNet has cross-attention at two resolutions (latent/1 and latent/2) so the multi-layer,
multi-resolution DAAM aggregation is exercised.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

TINY_DIR = Path(__file__).with_name("models") / "tiny"
TINY_MERGES = 4000  # first 4000 CLIP merges: common English words stay whole, rarer ones split


def build_tiny_pipeline(tokenizer_dir: Path):
    """The tiny StableDiffusionPipeline, in float32, from fixed seeds."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    torch.manual_seed(1)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8,
    )
    torch.manual_seed(2)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=64, norm_num_groups=8,
        block_out_channels=(8, 16, 16, 16), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def make_tiny(out_dir: str | Path = TINY_DIR) -> Path:
    """Write the tiny model folder (replacing an old one) and its preview factors."""
    from ..preview import fit_latent_rgb, save_latent_rgb
    from ..tokenizers.clip_bpe import write_clip_tokenizer

    out = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        pipe = build_tiny_pipeline(write_clip_tokenizer(Path(tmp) / "tok", max_merges=TINY_MERGES))
        if out.exists():
            shutil.rmtree(out)
        pipe.save_pretrained(out, safe_serialization=True)
    save_latent_rgb(out, fit_latent_rgb(pipe.vae))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(TINY_DIR), help="output folder (default: %(default)s)")
    out = make_tiny(parser.parse_args().out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"tiny model written to {out} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
