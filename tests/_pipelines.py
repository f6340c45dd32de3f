"""Tiny random diffusers pipelines of each family the bridge serves, saved as real folders.

SD 1.x is the shipped built-in tiny model.  Here: SD 2.x-style (linear projections,
v-prediction, "!" padding) and SDXL-style (two text encoders, text_time conditioning).
Weights are random and seeded; only the architecture matters to the capture.
"""

from __future__ import annotations

from pathlib import Path

from bridge.tokenizers.clip_bpe import write_clip_tokenizer
from bridge.tokenizers.t5_unigram import write_t5_tokenizer  # noqa: F401 (tests import it from here)

MERGES = 1000


def _text_encoder(tokenizer, with_projection=False, hidden=32, seed=0):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, projection_dim=32, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, hidden_act="gelu",
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(cfg)


def _vae(seed=2):
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8, block_out_channels=(8, 8, 8, 8),
        layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )


def make_sd2_like(folder: Path) -> Path:
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(write_clip_tokenizer(folder / "_tok", MERGES, pad_token="!"))
    torch.manual_seed(1)
    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=(2, 4), use_linear_projection=True, upcast_attention=True,
    )
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              prediction_type="v_prediction", clip_sample=False, set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(vae=_vae(), text_encoder=_text_encoder(tok), tokenizer=tok, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    out = folder / "sd2"
    pipe.save_pretrained(out)
    return out


def make_sdxl_like(folder: Path) -> Path:
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(write_clip_tokenizer(folder / "_tok1", MERGES))
    tok2 = CLIPTokenizer.from_pretrained(write_clip_tokenizer(folder / "_tok2", MERGES, pad_token="!"))
    torch.manual_seed(1)
    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
        cross_attention_dim=64,
    )
    scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                       steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(
        vae=_vae(), text_encoder=_text_encoder(tok), text_encoder_2=_text_encoder(tok2, with_projection=True, seed=3),
        tokenizer=tok, tokenizer_2=tok2, unet=unet, scheduler=scheduler,
    )
    out = folder / "sdxl"
    pipe.save_pretrained(out)
    return out


def make_lcm_like(folder: Path) -> Path:
    """An LCM-style model: the UNet takes the guidance scale as an input, so there is no CFG batch."""
    import torch
    from diffusers import LCMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(write_clip_tokenizer(folder / "_tok_lcm", MERGES))
    torch.manual_seed(1)
    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, time_cond_proj_dim=32,
    )
    scheduler = LCMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(vae=_vae(), text_encoder=_text_encoder(tok), tokenizer=tok, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    out = folder / "lcm"
    pipe.save_pretrained(out)
    return out




def make_sd3_like(folder: Path, name: str = "sd3", *, qk_norm=None, dual_attention_layers=(), num_layers: int = 3,
                  dynamic_shift: bool = False, with_t5: bool = True) -> Path:
    """A StableDiffusion3Pipeline: two CLIP encoders with projection, a T5 encoder, a 16-channel
    VAE with a shift, a patch-2 SD3Transformer2DModel whose last block is context_pre_only."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTokenizer, T5Config, T5EncoderModel, T5Tokenizer

    tok = CLIPTokenizer.from_pretrained(write_clip_tokenizer(folder / f"_{name}_tok1", MERGES))
    tok2 = CLIPTokenizer.from_pretrained(write_clip_tokenizer(folder / f"_{name}_tok2", MERGES, pad_token="!"))
    t5_parts = {"text_encoder_3": None, "tokenizer_3": None}
    if with_t5:
        tok3 = T5Tokenizer.from_pretrained(write_t5_tokenizer(folder / f"_{name}_tok3"))
        torch.manual_seed(4)
        t5 = T5EncoderModel(T5Config(vocab_size=len(tok3), d_model=64, d_ff=37, d_kv=8, num_layers=1, num_heads=4,
                                     relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
        t5_parts = {"text_encoder_3": t5, "tokenizer_3": tok3}
    torch.manual_seed(1)
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=16, num_layers=num_layers, attention_head_dim=8, num_attention_heads=4,
        joint_attention_dim=64, caption_projection_dim=32, pooled_projection_dim=64, out_channels=16,
        pos_embed_max_size=16, qk_norm=qk_norm, dual_attention_layers=tuple(dual_attention_layers),
    )
    torch.manual_seed(2)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, norm_num_groups=8, block_out_channels=(8, 8, 8, 8),
        layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=dynamic_shift)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=scheduler, vae=vae,
        text_encoder=_text_encoder(tok, with_projection=True), tokenizer=tok,
        text_encoder_2=_text_encoder(tok2, with_projection=True, seed=3), tokenizer_2=tok2, **t5_parts,
    )
    out = folder / name
    pipe.save_pretrained(out)
    return out


def make_flux_like(folder: Path, name: str = "flux", *, guidance_embeds: bool = False, num_layers: int = 2,
                   num_single_layers: int = 2) -> Path:
    """A FluxPipeline: a CLIP encoder (pooled only), a T5 encoder, a 4-channel VAE with a shift,
    a FluxTransformer2DModel with dual-stream and single-stream blocks and 3-axis RoPE
    (``guidance_embeds``: dev-style guidance distillation, else schnell-style)."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTokenizer, T5Config, T5EncoderModel, T5Tokenizer

    tok = CLIPTokenizer.from_pretrained(write_clip_tokenizer(folder / f"_{name}_tok1", MERGES))
    tok2 = T5Tokenizer.from_pretrained(write_t5_tokenizer(folder / f"_{name}_tok2"))
    torch.manual_seed(4)
    t5 = T5EncoderModel(T5Config(vocab_size=len(tok2), d_model=64, d_ff=37, d_kv=8, num_layers=1, num_heads=4,
                                 relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    torch.manual_seed(1)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=num_layers, num_single_layers=num_single_layers, attention_head_dim=8,
        num_attention_heads=4, joint_attention_dim=64, pooled_projection_dim=32, guidance_embeds=guidance_embeds,
        axes_dims_rope=(2, 2, 4),
    )
    torch.manual_seed(2)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8, block_out_channels=(8, 8, 8, 8),
        layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_image_seq_len=16,
                                                max_image_seq_len=256, base_shift=0.5, max_shift=1.15)
    pipe = FluxPipeline(transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=_text_encoder(tok), tokenizer=tok,
                        text_encoder_2=t5, tokenizer_2=tok2)
    out = folder / name
    pipe.save_pretrained(out)
    return out
