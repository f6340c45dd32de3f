"""The SD3 family: Stable Diffusion 3 and 3.5 (``StableDiffusion3Pipeline``, ``SD3Transformer2DModel``).

Every ``JointTransformerBlock`` runs one joint attention over [image; text]: image tokens
from ``to_q/to_k``, text tokens from ``add_q_proj/add_k_proj``, each with its own q/k norm
when the model has ``qk_norm``.  The text is 77 CLIP positions (both CLIP encoders' states side
by side on the feature axis) followed by the T5 positions (the pipeline's
``max_sequence_length``).  A word map is the image-query × text-key block of that joint
softmax: normalised over *all* keys, image and text, as the model attends.

The normaliser is the costly part (every image key), so the probe never forms the full
attention: per chunk of image queries it takes the log-sum-exp over the image keys and over
the text keys, joins them with ``logaddexp``, and keeps only exp(text scores − lse), averaged
over heads.  Chunks are sized so one chunk's scores stay under ``CHUNK_BYTES``: memory is
bounded whatever the image size.  (A fused kernel that returns the log-sum-exp exists only
as a private aten op, device-specific and computing the P·V product that is not needed.)

SD3.5's second, image-only attention (``attn2`` of dual-attention blocks) reads no text and
is not a site.  Skip-layer guidance runs the transformer a second time on the conditional
half alone; the capture keeps only calls with the run's first batch size, so those passes
never reach the maps.
"""

from __future__ import annotations

import inspect

from .base import Call, Site, TransformerFamily

CHUNK_BYTES = 64 << 20  # float32 scores of one query chunk (all rows, heads and keys)
CLIP_POSITIONS = 77
TEXT_PARTS = ("both", "clip", "t5")  # which text encoders' positions a word map reads


def joint_attention_modules(transformer) -> list[tuple[str, object]]:
    """(name, module) of every block's joint attention (the one with text projections)."""
    return [(f"transformer_blocks.{i}.attn", block.attn) for i, block in enumerate(transformer.transformer_blocks)
            if getattr(block.attn, "add_k_proj", None) is not None]


def joint_text_probabilities(q, k, text_k, scale: float, block: str = "text"):
    """Mean over heads of softmax([q·kᵀ, q·text_kᵀ]·scale) restricted to the text keys
    (``block="image"``: to the image keys, for the self-attention maps of query regions).

    q: (rows, heads, Q, d) image queries (all N of them, or a region's rows); k: (rows, heads,
    N, d) image keys; text_k: (rows, heads, T, d).  Returns (rows, 1, Q, T or N) float32.  The
    log-sum-exp over all N + T keys is taken per chunk of queries, so at most ``CHUNK_BYTES``
    of scores exist at once.
    """
    import torch

    rows, heads, n, _ = q.shape
    chunk = max(1, CHUNK_BYTES // (4 * rows * heads * (k.shape[2] + text_k.shape[2])))
    q, k, text_k = q.float(), k.float().transpose(-1, -2), text_k.float().transpose(-1, -2)
    out = []
    for start in range(0, n, chunk):  # over query chunks, not tokens: a few per layer
        qc = q[:, :, start:start + chunk] * scale
        text_scores, image_scores = torch.matmul(qc, text_k), torch.matmul(qc, k)
        lse = torch.logaddexp(image_scores.logsumexp(-1), text_scores.logsumexp(-1))
        kept = text_scores if block == "text" else image_scores
        out.append((kept - lse.unsqueeze(-1)).exp_().mean(dim=1, keepdim=True))
    return torch.cat(out, dim=2)


class SD3Family(TransformerFamily):
    name = "sd3"
    transformer_class = "SD3Transformer2DModel"
    attention_kind = "joint attention"

    def __init__(self, pipe, text_part: str = "both"):
        super().__init__(pipe)
        if text_part not in TEXT_PARTS:
            raise ValueError(f"text part must be one of {', '.join(TEXT_PARTS)}, got {text_part!r}")
        self.text_part = text_part  # "both": a word's CLIP tokens and T5 pieces; "clip" or "t5": one of them

    @property
    def patch(self) -> int:
        return int(self.transformer.config.patch_size)

    # -- defaults -------------------------------------------------------------------------
    @property
    def native_size(self) -> tuple[int, int]:
        side = int(self.transformer.config.sample_size) * self.vae_factor
        return side, side

    @property
    def size_multiple(self) -> int:
        return self.vae_factor * self.patch  # the pipeline refuses sizes its patches do not tile

    def default_guidance(self, model_name: str) -> float:
        return 0.0 if "turbo" in model_name.lower() else 7.0

    def max_steps(self, cap: int) -> int:
        return max(1, min(int(self.pipe.scheduler.config.get("num_train_timesteps", cap)), cap))

    def scheduler_kwargs(self, latent_hw: tuple[int, int], steps: int) -> dict:
        """``mu`` for a scheduler with dynamic shifting, computed as the pipeline does."""
        cfg = self.pipe.scheduler.config
        if not cfg.get("use_dynamic_shifting"):
            return {}
        from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

        seq = (latent_hw[0] // self.patch) * (latent_hw[1] // self.patch)
        return {"mu": calculate_shift(seq, cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096),
                                      cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.16))}

    # -- words ----------------------------------------------------------------------------
    @property
    def tokenizer(self):
        return self.pipe.tokenizer

    @property
    def max_sequence_length(self) -> int:
        """T5 positions of the text: the folder's ``max_sequence_length``, else the pipeline's (what it pads to)."""
        return self.defaults.get("max_sequence_length") or \
            int(inspect.signature(type(self.pipe).__call__).parameters["max_sequence_length"].default)

    def pipeline_kwargs(self) -> dict:
        return {"max_sequence_length": self.max_sequence_length}

    def map_words(self, prompt: str, include_special: bool = False):
        from ..attention.t5words import joint_words, t5_words
        from ..attention.words import WordMap, map_words

        total = CLIP_POSITIONS + self.max_sequence_length
        clip = map_words(self.tokenizer, prompt, include_special)
        t5_tokenizer = getattr(self.pipe, "tokenizer_3", None)
        if t5_tokenizer is None or self.text_part == "clip":  # without T5 its positions hold zeros
            return WordMap(clip.words, clip.token_indices, clip.dropped_words, total)
        t5 = t5_words(t5_tokenizer, prompt, self.max_sequence_length, include_special)
        if self.text_part == "t5":
            shifted = tuple(tuple(i + CLIP_POSITIONS for i in ix) for ix in t5.token_indices)
            return WordMap(t5.words, shifted, t5.dropped_words, total)
        return joint_words(clip, t5, CLIP_POSITIONS, include_special)

    # -- concepts -------------------------------------------------------------------------
    has_concept_maps = True
    concept_block_name = "joint"

    @property
    def token_patch(self) -> int:
        return self.patch

    @property
    def concept_blocks(self) -> int:
        return len(self.transformer.transformer_blocks)

    def concept_embeddings(self, names):
        """(concepts, joint width): each concept's first T5 token, encoded as the pipeline encodes a
        prompt; without T5, its first CLIP word token (both CLIP encoders side by side, zero-padded
        to the joint width, as the pipeline pads them)."""
        import torch

        device = self.transformer.device

        def encode(missing):
            if getattr(self.pipe, "text_encoder_3", None) is not None:
                return self.pipe._get_t5_prompt_embeds(prompt=missing, num_images_per_prompt=1,
                                                       max_sequence_length=self.max_sequence_length, device=device)[:, 0]
            states = torch.cat([self.pipe._get_clip_prompt_embeds(prompt=missing, device=device, clip_model_index=i)[0]
                                for i in (0, 1)], dim=-1)
            width = self.transformer.config.joint_attention_dim
            return torch.nn.functional.pad(states, (0, width - states.shape[-1]))[:, 1]

        return self.cached_concepts(names, encode)

    def concept_producer(self, latent_hw, map_hw, cfg: bool, device, layers=None):
        from .joint_concepts import JointConceptAttention

        return JointConceptAttention(self, latent_hw, map_hw, cfg, device, layers)

    # -- locator and probe ----------------------------------------------------------------
    def attention_sites(self) -> list[Site]:
        # "joint": one call gives the word maps and, while regions are set, the region maps
        return [Site(name, module, {"q": module.to_q, "k": module.to_k, "text_k": module.add_k_proj}, kind="joint")
                for name, module in joint_attention_modules(self.transformer)]

    @property
    def has_region_maps(self) -> bool:
        return True

    @property
    def layer_factors(self) -> tuple[int, ...]:
        return (self.vae_factor * self.patch,)

    def probabilities(self, site: Site, call: Call, cfg: bool):
        """The image × text block of the joint softmax for the conditional rows, heads already
        averaged (a heads axis of 1: the full per-head block would be heads times larger)."""
        parts = self._split(site, call, cfg)
        return None if parts is None else joint_text_probabilities(*parts, site.module.scale)

    def self_probabilities(self, site: Site, call: Call, cfg: bool, rows):
        """The image × image block of the joint softmax for the image queries at ``rows``."""
        parts = self._split(site, call, cfg)
        if parts is None:
            return None
        q, k, text_k = parts
        return joint_text_probabilities(q.index_select(2, rows), k, text_k, site.module.scale, block="image")

    def _split(self, site: Site, call: Call, cfg: bool):
        """(q, k, text_k) of the conditional rows, heads split, each with its own norm; None
        when the taps did not fire."""
        q, k, text_k = call.taps.get("q"), call.taps.get("k"), call.taps.get("text_k")
        if q is None or k is None or text_k is None:
            return None
        attn = site.module
        rows = self.conditional_rows(q.shape[0], cfg)

        def heads(x, norm):
            x = x[rows].unflatten(-1, (attn.heads, -1)).transpose(1, 2)
            return x if norm is None else norm(x)

        return heads(q, attn.norm_q), heads(k, attn.norm_k), heads(text_k, attn.norm_added_k)

    def layer_geometry(self, positions: int, latent_hw: tuple[int, int]) -> tuple[int, int, int]:
        h, w = latent_hw[0] // self.patch, latent_hw[1] // self.patch
        if h * w != positions:
            raise ValueError(f"a joint-attention layer has {positions} image positions, not the {h}×{w} patches of a {tuple(latent_hw)} latent")
        return h, w, self.vae_factor * self.patch
