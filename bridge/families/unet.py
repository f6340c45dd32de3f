"""The UNet family: Stable Diffusion 1.x, 2.x, XL, Turbo and LCM (``UNet2DConditionModel``).

Maps come from the cross-attention modules (``attn2``): image positions query the text
encoder's 77 CLIP tokens.  The probe reads the outputs of the module's own ``to_q`` and
``to_k`` (or ``to_kv`` after ``fuse_qkv_projections``) as the processor produced them, so
LoRA layers, IP-Adapters and custom processors are seen exactly as they computed.
"""

from __future__ import annotations

from .base import Call, ModelFamily, Site

DAAM_LEVELS = 4  # DAAM's layer vocabulary: factors 8, 16, 32 and 64 for SD's 8× VAE


def self_attention_modules(unet) -> list[tuple[str, object]]:
    """(name, module) for every self-attention module (``attn1``) of a UNet's transformer blocks."""
    from diffusers.models.attention_processor import Attention

    return [(name, module) for name, module in unet.named_modules()
            if isinstance(module, Attention) and name.endswith("attn1") and not getattr(module, "is_cross_attention", False)]


def cross_attention_modules(unet) -> list[tuple[str, object]]:
    """(name, module) for every cross-attention module of a UNet."""
    from diffusers.models.attention_processor import Attention

    found = []
    for name, module in unet.named_modules():
        if isinstance(module, Attention) and (getattr(module, "is_cross_attention", False) or name.endswith("attn2")):
            found.append((name, module))
    return found


def pyramid_size(n: int, latent_hw: tuple[int, int]) -> tuple[int, int, int]:
    """(h, w, downsampling) of the UNet level whose feature map has ``n`` positions.

    UNet down-samplers are stride-2 convolutions with padding 1, so each level has
    ceil(h / 2) × ceil(w / 2) positions; walking the levels from the latent size finds the one
    with n positions.  This works for any aspect ratio (never sqrt(n)).
    """
    h, w = latent_hw
    down = 1
    while h * w > n and (h > 1 or w > 1):
        h, w, down = -(-h // 2), -(-w // 2), down * 2
    if h * w != n:
        raise ValueError(f"a cross-attention layer has {n} positions, which matches no level of a {tuple(latent_hw)} latent")
    return h, w, down


class UNetFamily(ModelFamily):
    attention_kind = "cross-attention"

    @classmethod
    def accepts(cls, pipe) -> bool:
        unet = getattr(pipe, "unet", None)
        return unet is not None and type(unet).__name__ == "UNet2DConditionModel"

    @property
    def name(self) -> str:
        xl = getattr(self.pipe, "text_encoder_2", None) is not None or "XL" in type(self.pipe).__name__
        return "sdxl" if xl else "sd"

    @property
    def unet(self):
        return self.pipe.unet

    denoiser = unet

    # -- defaults -------------------------------------------------------------------------
    @property
    def native_size(self) -> tuple[int, int]:
        side = int(self.unet.config.sample_size) * self.vae_factor
        return side, side

    @property
    def embeds_guidance(self) -> bool:
        """LCM-style UNets take guidance as an input and never run CFG."""
        return getattr(self.unet.config, "time_cond_proj_dim", None) is not None

    def default_guidance(self, model_name: str) -> float:
        if "turbo" in model_name.lower():
            return 0.0
        if self.embeds_guidance:
            return 8.0
        return 5.0 if self.name == "sdxl" else 7.5

    # -- words ----------------------------------------------------------------------------
    @property
    def tokenizer(self):
        # SDXL's two CLIP tokenizers share vocabulary and positions: one word map serves both
        return getattr(self.pipe, "tokenizer", None) or self.pipe.tokenizer_2

    def map_words(self, prompt: str, include_special: bool = False):
        from ..attention.words import map_words

        return map_words(self.tokenizer, prompt, include_special)

    # -- locator and probe ----------------------------------------------------------------
    def attention_sites(self) -> list[Site]:
        sites = []
        for name, module in cross_attention_modules(self.unet):
            taps = {"q": module.to_q, "k": module.to_k}
            if getattr(module, "to_kv", None) is not None:  # fused projections: keys are to_kv's first half
                taps["kv"] = module.to_kv
            sites.append(Site(name, module, taps))
        return sites

    def self_attention_sites(self) -> list[Site]:
        sites = []
        for name, module in self_attention_modules(self.unet):
            taps = {"q": module.to_q, "k": module.to_k}
            if getattr(module, "to_qkv", None) is not None:  # fused: q, k, v are to_qkv's thirds
                taps["qkv"] = module.to_qkv
            sites.append(Site(name, module, taps, kind="self"))
        return sites

    @property
    def layer_factors(self) -> tuple[int, ...]:
        return tuple(self.vae_factor * 2**k for k in range(DAAM_LEVELS))

    def text_states(self, prompt: str):
        """(1, 77, width) the text encoder(s)' states of ``prompt``, as the pipeline encodes it."""
        pipe = self.pipe
        return pipe.encode_prompt(prompt, device=self.unet.device, num_images_per_prompt=1, do_classifier_free_guidance=False)[0]

    has_concept_maps = True

    def concept_producer(self, latent_hw, map_hw, cfg: bool, device, layers=None):
        from ..attention.concepts import OVAMConcepts

        return OVAMConcepts(self, latent_hw, map_hw, cfg, device)

    def probabilities(self, site: Site, call: Call, cfg: bool):
        """softmax(q·kᵀ·scale) of the conditional rows, as diffusers' attention forms it:
        heads split from the projections, the module's own q/k norms and scale, its mask;
        scores in float32 where the model asks for upcast attention (SD 2.x), the softmax
        always in float32."""
        return self._softmax(site, call, cfg, None)

    def self_probabilities(self, site: Site, call: Call, cfg: bool, rows):
        """The same softmax for the image queries at ``rows`` only (keys: every image position)."""
        return self._softmax(site, call, cfg, rows)

    def _softmax(self, site: Site, call: Call, cfg: bool, query_rows):
        import torch

        q, k = call.taps.get("q"), call.taps.get("k")
        if k is None and "kv" in call.taps:
            kv = call.taps["kv"]
            k = kv[..., : kv.shape[-1] // 2]
        if (q is None or k is None) and "qkv" in call.taps:
            q, k, _ = call.taps["qkv"].chunk(3, dim=-1)
        if q is None or k is None:
            return None
        attn = site.module
        batch, heads = q.shape[0], attn.heads
        rows = self.conditional_rows(batch, cfg)
        q = q[rows]
        if query_rows is not None:
            q = q.index_select(1, query_rows)
        q = q.unflatten(-1, (heads, -1)).transpose(1, 2)
        k = k[rows].unflatten(-1, (heads, -1)).transpose(1, 2)
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        if attn.upcast_attention:
            q, k = q.float(), k.float()
        scores = torch.matmul(q * attn.scale, k.transpose(-1, -2))
        mask = call.kwargs.get("attention_mask")
        if mask is not None:
            mask = attn.prepare_attention_mask(mask, k.shape[2], batch).view(batch, heads, -1, k.shape[2])
            scores = scores + mask[rows].to(scores.dtype)
        return scores.softmax(dim=-1, dtype=torch.float32)

    def layer_geometry(self, positions: int, latent_hw: tuple[int, int]) -> tuple[int, int, int]:
        h, w, down = pyramid_size(positions, latent_hw)
        return h, w, down * self.vae_factor
