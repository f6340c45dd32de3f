"""The networks and noise schedule of the built-in shapes model (sizes chosen for 2 CPU cores)."""

from __future__ import annotations

from ...tokenizers import clip_bpe
from .. import shapes_data as sd

MERGES = 4000  # first K CLIP merges: every caption word is one or two real CLIP tokens
TEXT_WIDTH = 128
# The longest caption is 18 tokens; 32 positions instead of CLIP's 77 cut the text encoder's and
# the cross-attention's work by more than half, in training and in every live step.
MAX_TOKENS = 32
LATENT_SIZE = sd.IMAGE_SIZE // 4


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
