"""ConceptAttention on joint-attention transformers (Helbling et al., "ConceptAttention:
Diffusion Transformers Learn Highly Interpretable Features", ICML 2025): concept maps from the
blocks with separate image and text streams — Flux's dual-stream blocks, SD3's joint blocks.

Each concept (any word, not only the prompt's) is embedded as the prompt is — the pipeline's
own T5 encoding, then the transformer's ``context_embedder`` — and keeps the first token
(the reference implementation's ``embed_concepts``; T5's encoder is bidirectional, so the
first token has read the whole concept; the family's ``concept_embeddings``).  The concepts
then travel through every such block as a residual stream of their own, updated with that block's *text-stream* weights
(``norm1_context`` modulated by the block's ``temb``, ``add_q/k/v_proj`` and their norms,
``to_add_out``, ``norm2_context``, ``ff_context``), exactly as the text tokens are.  In each
block the concept queries attend over [concept keys; image keys] (the paper's
"cross + self" variant; concept positions are 0, as the text's, so the rotary embedding leaves
them unchanged) and nobody attends to them: the image and text tokens never see the concepts,
so the generated image is the plain run's (tested bit for bit).  SD3's last block only reads
its text (``context_pre_only``): the concepts attend there but are not updated any more.

Saliency of a block: the image tokens' attention output (``o_x``, the input of ``to_out[0]``)
· the concepts' attention output (``o_c``, before ``to_add_out``), a softmax over the concepts
per image token.  That is the paper's output-space definition (its Eq. 9–10) and the
reference's original Flux code; the reference's diffusers port takes both *after* the output
projections instead — we follow the paper.  A step's map is the mean over the chosen blocks
(default: the later half of the dual-stream blocks, 10 of FLUX.1's 19 — the paper averages
its late layers), upsampled bicubically to the map size; the conditional pass only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..attention.concepts import ConceptSwitch


def default_concept_layers(blocks: int) -> tuple[int, ...]:
    """The later half of the dual-stream blocks."""
    return tuple(range(blocks // 2, blocks))


class BlockTaps:
    """What a concept stream reads of each dual-stream block — its image keys and values
    (``to_k``/``to_v``, or a fused ``to_qkv``) and the image tokens' attention output (the input
    of ``to_out[0]``) — handed with the block's call arguments to :meth:`on_block` once the block
    has run, while :meth:`tapping`.  The capture and the built-in model's training both read
    the blocks through this."""

    _seen: dict[str, torch.Tensor]

    def tapping(self) -> bool:
        raise NotImplementedError

    def on_block(self, index: int, block, k, v, out, kwargs: dict) -> None:
        """``k``, ``v``, ``out`` (rows, N, inner), or None where the processor used other projections."""
        raise NotImplementedError

    def tap(self, transformer) -> list:
        """Install the hooks on ``transformer``'s dual-stream blocks; returns their handles."""
        self._seen = {}  # the current block's image k, v and attention output
        hooks = []
        for i, block in enumerate(transformer.transformer_blocks):
            attn = block.attn
            if getattr(attn, "fused_projections", False):
                hooks.append(attn.to_qkv.register_forward_hook(self._keep("qkv")))
            else:
                hooks.append(attn.to_k.register_forward_hook(self._keep("k")))
                hooks.append(attn.to_v.register_forward_hook(self._keep("v")))
            hooks.append(attn.to_out[0].register_forward_pre_hook(self._keep_input("out")))
            hooks.append(block.register_forward_hook(self._after_block(i, block), with_kwargs=True))
        return hooks

    def _keep(self, role):
        def hook(_module, _args, output):
            if self.tapping():
                self._seen[role] = output
        return hook

    def _keep_input(self, role):
        def hook(_module, args):
            if self.tapping():
                self._seen[role] = args[0]
        return hook

    def _after_block(self, index: int, block):
        def hook(_module, _args, kwargs, _output):
            if not self.tapping():
                return
            seen, self._seen = self._seen, {}
            if "qkv" in seen:
                _, k, v = seen["qkv"].chunk(3, dim=-1)
            else:
                k, v = seen.get("k"), seen.get("v")
            self.on_block(index, block, k, v, seen.get("out"), kwargs)
        return hook


class JointConceptAttention(ConceptSwitch, BlockTaps):
    """The concept residual stream and its saliency maps for one run (see the module docstring)."""

    def __init__(self, family, latent_hw, map_hw, cfg: bool, device, layers=None):
        self.family = family
        self.transformer = family.transformer
        blocks = len(self.transformer.transformer_blocks)
        self.layers = tuple(layers) if layers else default_concept_layers(blocks)  # the engine checked them
        patch = family.token_patch
        self.grid = (latent_hw[0] // patch, latent_hw[1] // patch)
        self.map_hw, self.cfg, self.device = tuple(map_hw), cfg, device
        self._embeds = None  # (concepts, joint_attention_dim) T5 states of the current concepts
        self._stream = None  # (rows, concepts, inner) the concept residual stream inside one pass
        self._pending: list[torch.Tensor] = []  # this step's per-block saliency, (concepts, N)
        self.timer = None  # a CaptureTimer while a benchmark times the capture's own work
        self._passes = 0
        self._batch = None  # the run's first denoiser batch: SD3's skip-layer passes have another
        self._hooks = []

    # -- hooks ----------------------------------------------------------------------------
    def __enter__(self) -> "JointConceptAttention":
        self._hooks.append(self.transformer.register_forward_pre_hook(self._start_pass, with_kwargs=True))
        self._hooks += self.tap(self.transformer)
        return self

    def __exit__(self, *exc) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        self._stream = None

    def tapping(self) -> bool:
        return self._stream is not None

    def _start_pass(self, _module, args, kwargs) -> None:
        self._passes += 1
        unconditional = self.cfg and not self.family.cfg_in_batch and self._passes % 2 == 0
        x = kwargs.get("hidden_states", args[0] if args else None)
        batch = None if x is None else x.shape[0]
        self._batch = self._batch or batch
        if self._embeds is None or unconditional or batch != self._batch:
            self._stream = None
            return
        c = self.transformer.context_embedder(self._embeds.to(self.transformer.dtype))
        self._stream = c.unsqueeze(0)  # rows are expanded at the first block (the batch is known there)

    def on_block(self, index: int, block, k, v, out, kwargs: dict) -> None:
        """One dual-stream block on the concept stream; a chosen block's saliency (concepts, N),
        the conditional images summed, joins this step's."""
        started = self.timer.start() if self.timer else None
        if k is None or v is None or out is None:  # the processor used other projections: no concept maps this pass
            self._stream, saliency = None, None
        else:
            rows = self.family.conditional_rows(k.shape[0], self.cfg)
            self._stream, saliency = concept_block(block, k[rows], v[rows], out[rows], self._stream, kwargs["temb"][rows],
                                                   kwargs.get("image_rotary_emb"))
            saliency = saliency.sum(dim=0).transpose(0, 1)
        if self.timer:
            self.timer.stop("concept stream", started)
        if index in self.layers and saliency is not None:
            self._pending.append(saliency)

    # -- concepts and steps -----------------------------------------------------------------
    def start_step(self) -> None:
        names = self.take_next()
        if names is None:
            return
        self._pending = []
        self._embeds = self.family.concept_embeddings(names) if names else None

    def end_step(self):
        """This step's (concepts, h, w): the chosen blocks' saliency, averaged, at the map size."""
        pending, self._pending = self._pending, []
        if self._embeds is None or not pending:
            return None
        h, w = self.grid
        mean = torch.stack(pending).mean(dim=0).reshape(1, -1, h, w)
        return F.interpolate(mean, size=self.map_hw, mode="bicubic", align_corners=False).clamp_(min=0)[0]


def concept_block(block, k, v, out, stream, temb, rotary=None):
    """One dual-stream block's step of the concept stream: (new stream, saliency (rows, N, concepts)).

    ``k``, ``v``: the block's image keys and values as ``to_k``/``to_v`` give them (before the
    head norm and the rotation), ``out``: the image tokens' attention output (the input of
    ``to_out[0]``), all (rows, N, inner); ``stream``: (rows or 1, concepts, inner); ``temb``
    (rows, dim).  The capture and the built-in model's training (bridge/builtin/training/dit.py)
    both run this, so the maps trained are the maps streamed.
    """
    from diffusers.models.embeddings import apply_rotary_emb

    attn = block.attn
    c = stream.expand(k.shape[0], -1, -1) if stream.shape[0] == 1 else stream
    d = k.shape[-1] // attn.heads
    last = getattr(block, "context_pre_only", False)  # SD3's last block: text read, not updated

    def heads(x, norm=None):
        x = x.unflatten(-1, (-1, d))  # (rows, positions, heads, d)
        return x if norm is None else norm(x)

    if last:
        norm_c = block.norm1_context(c, temb)
    else:
        norm_c, gate_msa, shift_mlp, scale_mlp, gate_mlp = block.norm1_context(c, emb=temb)
    cq = heads(attn.add_q_proj(norm_c), attn.norm_added_q)
    ck = heads(attn.add_k_proj(norm_c), attn.norm_added_k)
    cv = heads(attn.add_v_proj(norm_c))
    ik, iv = heads(k, attn.norm_k), heads(v)
    if rotary is not None:  # the image part of the joint sequence's rotation; the concepts sit at 0
        n = ik.shape[1]
        ik = apply_rotary_emb(ik, tuple(r[-n:] for r in rotary), sequence_dim=1)
    keys, values = torch.cat([ck, ik], dim=1), torch.cat([cv, iv], dim=1)
    o_c = F.scaled_dot_product_attention(cq.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2))
    o_c = o_c.transpose(1, 2).flatten(2, 3).to(cq.dtype)  # (rows, concepts, inner)
    saliency = torch.softmax(torch.matmul(out.float(), o_c.float().transpose(-1, -2)), dim=-1)  # over concepts
    if last:
        return c, saliency
    # the text stream's update, on the concepts
    c = c + gate_msa.unsqueeze(1) * attn.to_add_out(o_c)
    normed = block.norm2_context(c) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
    c = c + gate_mlp.unsqueeze(1) * block.ff_context(normed)
    if c.dtype == torch.float16:
        c = c.clip(-65504, 65504)
    return c, saliency
