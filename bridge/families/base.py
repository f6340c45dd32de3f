"""The model-family protocol: what the bridge must know about one architecture, in one place.

A family wraps one loaded pipeline, in the spirit of k-diffusion's model wrappers, and is the
only code that knows the pipeline's denoiser, its attention modules and its latent layout.
Capture follows castorini/daam's split:

- **locator** — :meth:`ModelFamily.attention_sites` finds the attention modules whose maps
  DAAM reads and names, for each, the submodules ("taps") whose outputs hold the image
  queries and the text keys;
- **hooker** — generic, in ``bridge.attention``: it wraps each site's own processor (which
  keeps computing the layer) and records the taps' outputs during the call;
- **probe** — :meth:`ModelFamily.probabilities` turns one call's recorded outputs into
  attention probabilities of image positions over text tokens, for the conditional rows.

Everything else a run needs from the model is here too: tokens → words, each layer's map
geometry, which batch rows are conditional, the latent layout for previews, and the defaults.
A new family is one module with a subclass plus its line in ``bridge.families.FAMILIES``.

Joint-attention transformers fit the same shape: an SD3 site taps ``to_q`` (image queries),
``to_k`` and ``add_k_proj`` (image and text keys of the one joint sequence) and its probe
takes the softmax over the joint keys and keeps the text columns; a Flux single-stream site
taps ``to_q``/``to_k`` of the concatenated sequence and slices text and image apart, reading
the rotary embedding from the call's arguments; packed latents are unpacked by
:meth:`spatial_latents`; T5 words come from :meth:`map_words`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CONCEPT_CACHE = 64  # concept embeddings kept per loaded model


@dataclass(frozen=True, eq=False)
class Site:
    """One attention module whose maps the family can read."""

    name: str  # the module's name in the denoiser, e.g. "up_blocks.1.attentions.0.transformer_blocks.0.attn2"
    module: Any  # the attention module; its ``processor`` is wrapped, never replaced
    taps: dict[str, Any] = field(default_factory=dict)  # role → submodule whose output the probe reads
    kind: str = "cross"  # "cross": image queries × text keys (word maps); "self": image × image (region
    # maps); "joint": one joint attention giving both


@dataclass
class Call:
    """What the hooker saw during one call of a site's processor."""

    args: tuple  # the processor's positional arguments after ``attn`` (hidden_states, …)
    kwargs: dict  # its keyword arguments (encoder_hidden_states, attention_mask, …)
    taps: dict[str, Any]  # role → the first output of that tap during the call


class ModelFamily:
    """Base class: the parts every diffusers text-to-image pipeline shares; subclasses fill in the rest."""

    name = "?"  # shown in logs and manifests ("sd", "sdxl", …)
    attention_kind = "attention"  # how messages call the captured layers ("cross-attention")

    def __init__(self, pipe):
        self.pipe = pipe
        self.defaults: dict = {}  # the folder's bridge_defaults.json (bridge/models/defaults.py)

    def configure(self, defaults: dict) -> None:
        """Take the folder's recommendations that concern the architecture (text positions, size)."""
        self.defaults = dict(defaults)

    def pipeline_kwargs(self) -> dict:
        """Keyword arguments every pipeline call of this model gets besides the request's."""
        return {}

    @classmethod
    def accepts(cls, pipe) -> bool:
        """Whether this family knows ``pipe``'s architecture (judged by its components)."""
        raise NotImplementedError

    # -- defaults -------------------------------------------------------------------------
    @property
    def vae_factor(self) -> int:
        """Image pixels per latent pixel."""
        return int(getattr(self.pipe, "vae_scale_factor", 8) or 8)

    @property
    def size_multiple(self) -> int:
        """What image sides must be a multiple of (a transformer's patches tile its latent)."""
        return self.vae_factor

    @property
    def native_size(self) -> tuple[int, int]:
        """(width, height) the model was trained at."""
        raise NotImplementedError

    @property
    def embeds_guidance(self) -> bool:
        """True when guidance is an input of the denoiser (no CFG batch)."""
        return False

    def default_guidance(self, model_name: str) -> float:
        raise NotImplementedError

    cfg_in_batch = True  # CFG stacks [unconditional, conditional] in one denoiser call (False:
    # a separate call per step after the conditional one, as Flux's true CFG)

    def uses_cfg(self, guidance: float) -> bool:
        return guidance > 1.0 and not self.embeds_guidance

    def guidance_kwargs(self, guidance: float, negative_prompt: str, cfg: bool) -> dict:
        """The pipeline's keyword arguments for the request's guidance and negative prompt."""
        kwargs = {"guidance_scale": guidance}
        if cfg and negative_prompt:
            kwargs["negative_prompt"] = negative_prompt
        return kwargs

    def max_steps(self, cap: int) -> int:
        """Most steps the scheduler can take, at most ``cap``: "leading" spacing shifts every
        timestep up by ``steps_offset``, so asking for all training timesteps would index past
        the last one."""
        cfg = self.pipe.scheduler.config
        limit = int(cfg.get("num_train_timesteps", cap))
        if cfg.get("timestep_spacing", "leading") == "leading":
            limit -= int(cfg.get("steps_offset", 0) or 0)
        return max(1, min(limit, cap))

    def scheduler_kwargs(self, latent_hw: tuple[int, int], steps: int) -> dict:
        """What ``scheduler.set_timesteps`` needs besides the step count for this latent size
        (flow-matching schedulers with dynamic shifting take ``mu``; Flux's pipeline passes its
        own sigmas), as the pipeline passes it."""
        return {}

    # -- words ----------------------------------------------------------------------------
    @property
    def tokenizer(self):
        raise NotImplementedError

    def map_words(self, prompt: str, include_special: bool = False):
        """Words of ``prompt`` with their positions in the text keys the probe returns (a WordMap)."""
        raise NotImplementedError

    # -- concepts -------------------------------------------------------------------------
    @property
    def has_concept_maps(self) -> bool:
        """Whether this family gives concept maps."""
        return False

    concept_block_name = "dual-stream"  # what the blocks a concept-layer choice names are called

    @property
    def concept_blocks(self) -> int:
        """How many blocks a concept-layer choice may name (0: concept maps read every layer)."""
        return 0

    def cached_concepts(self, names, encode):
        """(concepts, width) for ``names``, encoding only those not seen lately: ``encode(list of
        names)`` → (n, width).  A transformer's text encoder is large (T5-XXL over its whole
        sequence, for each concept), and a playlist sets the same concepts run after run."""
        import torch

        cache = self.__dict__.setdefault("_concept_cache", {})
        missing = [n for n in dict.fromkeys(names) if n not in cache]
        if missing:
            for name, row in zip(missing, encode(missing)):
                cache[name] = row
            while len(cache) > CONCEPT_CACHE:  # oldest first (dicts keep insertion order)
                cache.pop(next(iter(cache)))
        return torch.stack([cache[n] for n in names])

    def concept_producer(self, latent_hw, map_hw, cfg: bool, device, layers=None):
        """The run's concept-map producer (bridge/attention/concepts.py), or None where this
        family has none (a request with concepts is then refused)."""
        return None

    # -- locator and probe ----------------------------------------------------------------
    def attention_sites(self) -> list[Site]:
        raise NotImplementedError

    def self_attention_sites(self) -> list[Site]:
        """Sites (``kind="self"``) whose image × image attention gives region maps; [] where
        this family has none yet (a request with regions is then refused)."""
        return []

    @property
    def has_region_maps(self) -> bool:
        """Whether this family gives self-attention maps of query regions."""
        return bool(self.self_attention_sites())

    def self_probabilities(self, site: Site, call: Call, cfg: bool, rows):
        """(B, heads, len(rows), positions) float32: the softmax rows of the image queries at
        ``rows`` over all image keys, conditional rows only; None when the taps did not fire."""
        raise NotImplementedError

    @property
    def layer_factors(self) -> tuple[int, ...]:
        """The downsampling factors (image pixels per map cell) a layer filter may name."""
        raise NotImplementedError

    def probabilities(self, site: Site, call: Call, cfg: bool):
        """(rows, heads, positions, text tokens) float32 probabilities of one call, for the
        conditional rows only; None when the taps did not fire (the layer gives no map)."""
        raise NotImplementedError

    def conditional_rows(self, batch: int, cfg: bool) -> slice:
        """Which rows of an attention batch are conditional: CFG stacks [unconditional,
        conditional], so keep the second half; without CFG every row is conditional."""
        if cfg and batch % 2 == 0:
            return slice(batch // 2, batch)
        return slice(0, batch)

    def image_positions(self, site: Site, call: Call) -> int | None:
        """How many image queries one call of ``site`` had (None when its taps did not fire);
        a single-stream transformer block's sequence also holds the text."""
        tap = call.taps.get("q", call.taps.get("qkv"))
        return None if tap is None else tap.shape[1]

    def layer_geometry(self, positions: int, latent_hw: tuple[int, int]) -> tuple[int, int, int]:
        """(h, w, factor) of a layer map with ``positions`` image positions; factor = image
        pixels per map cell.  ValueError when no layer of this latent has that many."""
        raise NotImplementedError

    # -- latents --------------------------------------------------------------------------
    @property
    def denoiser(self):
        """The model that runs once per step (a UNet, a transformer)."""
        raise NotImplementedError

    @property
    def vae(self):
        return self.pipe.vae

    def latent_hw(self, height: int, width: int) -> tuple[int, int]:
        return height // self.vae_factor, width // self.vae_factor

    def begin_run(self, latent_hw: tuple[int, int]) -> None:
        """A run of this latent size starts (a packed layout needs it to unpack previews)."""

    def spatial_latents(self, latents):
        """The pipeline's latents as (batch, channels, h, w), e.g. unpacking packed layouts."""
        return latents


class TransformerFamily(ModelFamily):
    """What the joint-attention transformer families share: the denoiser is ``pipe.transformer``,
    recognised by its class name."""

    transformer_class = "?"  # e.g. "FluxTransformer2DModel"

    @classmethod
    def accepts(cls, pipe) -> bool:
        transformer = getattr(pipe, "transformer", None)
        return transformer is not None and type(transformer).__name__ == cls.transformer_class

    @property
    def transformer(self):
        return self.pipe.transformer

    @property
    def denoiser(self):
        return self.pipe.transformer
