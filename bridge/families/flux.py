"""The Flux family: FLUX.1 schnell and dev (``FluxPipeline``, ``FluxTransformer2DModel``).

Flux has two kinds of block, both attending over one joint sequence [text; image]:

- **dual-stream** (``transformer_blocks.N.attn``): image tokens from ``to_q/to_k``, text
  tokens from ``add_q_proj/add_k_proj``, each with its own RMS q/k norm;
- **single-stream** (``single_transformer_blocks.N.attn``): one ``to_q/to_k`` over the
  concatenated sequence, the text first (the pipeline's ``max_sequence_length`` T5 positions).

Either way the rotary embedding (``image_rotary_emb``, an argument of the call) is applied to
q and k after the norms, before attention, so the probe applies it too, with diffusers' own
``apply_rotary_emb`` on the same arguments.  A word map is then the image-query × text-key
block of the joint softmax, normalised over all keys, taken by SD3's chunked log-sum-exp
(``joint_text_probabilities``): the same maths, the same memory bound.

The text is T5 only (CLIP gives just the pooled vector), so words are sentencepiece words
over the pipeline's ``max_sequence_length``.  Guidance: a guidance-distilled model (dev,
``guidance_embeds``) takes it as an input and runs no CFG; a model without it (schnell) runs
true CFG when guidance > 1, as a *separate* pass per step after the conditional one (the
capture reads only the first pass of each step).  Latents are packed 2 × 2 into tokens;
:meth:`FluxFamily.spatial_latents` unpacks them for previews.

Layer names: ``--layers single`` keeps the single-stream blocks, ``--layers transformer_blocks``
the dual-stream ones, ``transformer_blocks.3`` one block (names match at dots, so it does not
match ``single_transformer_blocks.3``).
"""

from __future__ import annotations

import inspect

import numpy as np

from .base import Call, Site, TransformerFamily
from .sd3 import joint_text_probabilities


def flux_attention_sites(transformer) -> list[Site]:
    """Every dual-stream and single-stream block's attention, with the taps its probe reads."""
    sites = []
    for i, block in enumerate(transformer.transformer_blocks):
        attn = block.attn
        taps = ({"qkv": attn.to_qkv, "text_qkv": attn.to_added_qkv} if getattr(attn, "fused_projections", False)
                else {"q": attn.to_q, "k": attn.to_k, "text_q": attn.add_q_proj, "text_k": attn.add_k_proj})
        sites.append(Site(f"transformer_blocks.{i}.attn", attn, taps, kind="joint"))
    for i, block in enumerate(transformer.single_transformer_blocks):
        attn = block.attn
        taps = {"qkv": attn.to_qkv} if getattr(attn, "fused_projections", False) else {"q": attn.to_q, "k": attn.to_k}
        sites.append(Site(f"single_transformer_blocks.{i}.attn", attn, taps, kind="joint"))
    return sites


def query_key(taps: dict, fused: str, q_role: str, k_role: str):
    """(q, k) from a fused qkv projection's output, or from the separate ones (None where absent)."""
    if fused in taps:
        q, k, _ = taps[fused].chunk(3, dim=-1)
        return q, k
    return taps.get(q_role), taps.get(k_role)


class FluxFamily(TransformerFamily):
    name = "flux"
    transformer_class = "FluxTransformer2DModel"
    attention_kind = "joint attention"
    cfg_in_batch = False  # true CFG is a second transformer call per step, not a batch half

    def __init__(self, pipe):
        super().__init__(pipe)
        self._run_hw: tuple[int, int] | None = None  # the current run's latent (h, w), for unpacking

    # -- defaults -------------------------------------------------------------------------
    @property
    def native_size(self) -> tuple[int, int]:
        side = self.defaults.get("size") or int(getattr(self.pipe, "default_sample_size", 128)) * self.vae_factor
        return side, side

    @property
    def size_multiple(self) -> int:
        return self.vae_factor * 2  # latents are packed 2 × 2 into tokens

    @property
    def embeds_guidance(self) -> bool:
        return bool(self.transformer.config.guidance_embeds)

    def default_guidance(self, model_name: str) -> float:
        return 3.5 if self.embeds_guidance else 0.0

    def guidance_kwargs(self, guidance: float, negative_prompt: str, cfg: bool) -> dict:
        if self.embeds_guidance:
            return {"guidance_scale": guidance}
        if cfg:  # FluxPipeline runs true CFG only with a negative prompt; "" is one
            return {"true_cfg_scale": guidance, "negative_prompt": negative_prompt or ""}
        return {}

    def max_steps(self, cap: int) -> int:
        return max(1, min(int(self.pipe.scheduler.config.get("num_train_timesteps", cap)), cap))

    def scheduler_kwargs(self, latent_hw: tuple[int, int], steps: int | None = None) -> dict:
        """The sigmas and ``mu`` FluxPipeline hands its scheduler, computed as it does."""
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        cfg = self.pipe.scheduler.config
        seq = (latent_hw[0] // 2) * (latent_hw[1] // 2)
        kwargs = {"mu": calculate_shift(seq, cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096),
                                        cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15))}
        if steps and not cfg.get("use_flow_sigmas"):
            kwargs["sigmas"] = np.linspace(1.0, 1 / steps, steps)
        return kwargs

    # -- words ----------------------------------------------------------------------------
    @property
    def tokenizer(self):
        return self.pipe.tokenizer_2  # T5: the only text the transformer attends to

    @property
    def max_sequence_length(self) -> int:
        """T5 positions: the folder's ``max_sequence_length``, else the pipeline's default."""
        return self.defaults.get("max_sequence_length") or \
            int(inspect.signature(type(self.pipe).__call__).parameters["max_sequence_length"].default)

    def pipeline_kwargs(self) -> dict:
        return {"max_sequence_length": self.max_sequence_length}

    def map_words(self, prompt: str, include_special: bool = False):
        from ..attention.t5words import t5_words

        return t5_words(self.tokenizer, prompt, self.max_sequence_length, include_special)

    # -- concepts -------------------------------------------------------------------------
    def concept_embeddings(self, names):
        """(concepts, T5 width): each concept's first token, encoded as the pipeline encodes a prompt."""
        def encode(missing):
            return self.pipe._get_t5_prompt_embeds(prompt=missing, num_images_per_prompt=1,
                                                   max_sequence_length=self.max_sequence_length, device=self.transformer.device)[:, 0]

        return self.cached_concepts(names, encode)

    has_concept_maps = True
    token_patch = 2  # latent pixels per token side (the 2 × 2 packing)

    @property
    def concept_blocks(self) -> int:
        return len(self.transformer.transformer_blocks)

    def concept_producer(self, latent_hw, map_hw, cfg: bool, device, layers=None):
        from .joint_concepts import JointConceptAttention

        return JointConceptAttention(self, latent_hw, map_hw, cfg, device, layers)

    # -- locator and probe ----------------------------------------------------------------
    def attention_sites(self) -> list[Site]:
        return flux_attention_sites(self.transformer)

    def conditional_rows(self, batch: int, cfg: bool) -> slice:
        return slice(0, batch)  # true CFG's negative pass is a call of its own, which the capture skips

    @property
    def has_region_maps(self) -> bool:
        return True

    @property
    def layer_factors(self) -> tuple[int, ...]:
        return (self.vae_factor * 2,)

    def probabilities(self, site: Site, call: Call, cfg: bool):
        parts = self._split(site, call, cfg)
        return None if parts is None else joint_text_probabilities(*parts, site.module.head_dim ** -0.5)

    def self_probabilities(self, site: Site, call: Call, cfg: bool, rows):
        parts = self._split(site, call, cfg)
        if parts is None:
            return None
        q, k, text_k = parts
        return joint_text_probabilities(q.index_select(2, rows), k, text_k, site.module.head_dim ** -0.5, block="image")

    def image_positions(self, site: Site, call: Call) -> int | None:
        taps = call.taps
        if "text_q" in taps or "text_qkv" in taps:  # dual-stream: the image tokens' own projection
            tap = taps.get("q", taps.get("qkv"))
            return None if tap is None else tap.shape[1]
        tap = taps.get("q", taps.get("qkv"))
        return None if tap is None else tap.shape[1] - self.max_sequence_length

    def _split(self, site: Site, call: Call, cfg: bool):
        """(image q, image k, text k) of the conditional rows as (rows, heads, positions, d),
        normed and rotated as the processor attended with them; None when the taps did not fire."""
        import torch
        from diffusers.models.embeddings import apply_rotary_emb

        attn, taps = site.module, call.taps
        q, k = query_key(taps, "qkv", "q", "k")
        if q is None or k is None:
            return None
        rows = self.conditional_rows(q.shape[0], cfg)

        def heads(x, norm):
            return norm(x[rows].unflatten(-1, (-1, attn.head_dim)))  # (rows, positions, heads, d)

        q, k = heads(q, attn.norm_q), heads(k, attn.norm_k)
        text = self.max_sequence_length
        if "text_q" in taps or "text_qkv" in taps:  # dual-stream: [text; image] is joined inside the call
            text_q, text_k = query_key(taps, "text_qkv", "text_q", "text_k")
            if text_q is None or text_k is None:
                return None
            text = text_q.shape[1]
            q = torch.cat([heads(text_q, attn.norm_added_q), q], dim=1)
            k = torch.cat([heads(text_k, attn.norm_added_k), k], dim=1)
        elif q.shape[1] <= text:
            return None
        rotary = call.kwargs.get("image_rotary_emb", call.args[3] if len(call.args) > 3 else None)
        if rotary is not None:
            q = apply_rotary_emb(q, rotary, sequence_dim=1)
            k = apply_rotary_emb(k, rotary, sequence_dim=1)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # (rows, heads, positions, d)
        return q[:, :, text:], k[:, :, text:], k[:, :, :text]

    def layer_geometry(self, positions: int, latent_hw: tuple[int, int]) -> tuple[int, int, int]:
        h, w = latent_hw[0] // 2, latent_hw[1] // 2
        if h * w != positions:
            raise ValueError(f"a Flux attention layer has {positions} image positions, not the {h}×{w} tokens of a {tuple(latent_hw)} latent")
        return h, w, self.vae_factor * 2

    # -- latents --------------------------------------------------------------------------
    def begin_run(self, latent_hw: tuple[int, int]) -> None:
        self._run_hw = tuple(latent_hw)

    def spatial_latents(self, latents):
        """Packed (batch, tokens, channels·4) latents → (batch, channels, h, w) of the current run."""
        if latents.ndim != 3:
            return latents
        if self._run_hw is None:
            raise ValueError("packed Flux latents need the run's size; call begin_run(latent_hw) first")
        h, w = self._run_hw
        b, _, c = latents.shape
        x = latents.reshape(b, h // 2, w // 2, c // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(b, c // 4, h, w)

