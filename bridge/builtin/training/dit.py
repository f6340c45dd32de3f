"""The pieces of the built-in transformer model (builtin:shapes-dit): a small FLUX.1-family
transformer over the shipped shapes VAE's latents, a T5 encoder on a vocabulary of the captions,
and the attention it is grounded with during training."""

from __future__ import annotations

from pathlib import Path

import torch

from ...families.joint_concepts import BlockTaps, concept_block
from .. import shapes_data as sd

WIDTH = 128  # the transformer's and the T5 encoder's width
HEADS = 4
TEXT_POSITIONS = 24  # T5 positions: the longest caption is 20 pieces with its end token


def caption_corpus(seed: int = 11, count: int = 4000) -> list[str]:
    """Captions to train the T5 vocabulary on (every caption word occurs many times)."""
    return [scene.caption for scene in sd.sample_scenes(seed, count)]


def write_caption_tokenizer(folder: Path) -> Path:
    from ...tokenizers.t5_unigram import write_word_unigram

    return write_word_unigram(folder, caption_corpus(), model_max_length=TEXT_POSITIONS)


def make_t5(vocab_size: int):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=vocab_size, d_model=WIDTH, d_ff=2 * WIDTH, d_kv=WIDTH // HEADS, num_layers=2,
                                   num_heads=HEADS, relative_attention_num_buckets=16, dropout_rate=0.0, pad_token_id=0,
                                   eos_token_id=1, decoder_start_token_id=0))


def make_transformer(dual: int = 3, single: int = 3, pooled_dim: int = 128):
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=dual, num_single_layers=single, attention_head_dim=WIDTH // HEADS,
        num_attention_heads=HEADS, joint_attention_dim=WIDTH, pooled_projection_dim=pooled_dim, guidance_embeds=False,
        axes_dims_rope=(8, 12, 12),
    )


class T5CaptionEncoder:
    """T5 ids of captions padded to TEXT_POSITIONS, and which object each piece names."""

    def __init__(self, tokenizer):
        from ...attention.t5words import group_pieces

        self.tok, self.group = tokenizer, group_pieces

    def encode(self, scene) -> tuple[list[int], list[int]]:
        ids = self.tok(scene.caption, add_special_tokens=True)["input_ids"]
        pieces = self.tok.convert_ids_to_tokens(ids[:-1])  # the end token names nothing
        groups = self.group(pieces)
        words = scene.pieces
        if len(groups) != len(words):
            raise ValueError(f"caption {scene.caption!r}: {len(groups)} piece groups for {len(words)} words")
        owner = [-1] * len(ids)
        for group, (_, obj) in zip(groups, words):
            for i in group:
                owner[i] = obj
        pad = TEXT_POSITIONS - len(ids)
        if pad < 0:
            raise ValueError(f"caption {scene.caption!r} is {len(ids)} pieces, over {TEXT_POSITIONS}")
        return ids + [self.tok.pad_token_id] * pad, owner + [-1] * pad

    def batch(self, scenes):
        pairs = [self.encode(s) for s in scenes]
        return torch.tensor([i for i, _ in pairs]), torch.tensor([o for _, o in pairs])

    def empty(self) -> list[int]:
        ids = self.tok("", add_special_tokens=True)["input_ids"]
        return ids + [self.tok.pad_token_id] * (TEXT_POSITIONS - len(ids))


class GroundedFluxAttention:
    """Training only: Flux's attention written out, keeping each image query's attention over
    the text keys (renormalised over the text, heads averaged) for the grounding loss — and,
    where ``text_store`` is given, in the dual-stream blocks the other direction too: each text
    query's attention over the image keys (renormalised over the image, heads averaged), the
    attention ConceptAttention's concept queries make with the text stream's weights."""

    def __init__(self, store: list, text_positions: int, text_store: list | None = None):
        self.store, self.text, self.text_store = store, text_positions, text_store

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        from diffusers.models.embeddings import apply_rotary_emb

        d = attn.head_dim

        def split(x):
            return x.unflatten(-1, (-1, d))

        q, k, v = split(attn.to_q(hidden_states)), split(attn.to_k(hidden_states)), split(attn.to_v(hidden_states))
        q, k = attn.norm_q(q), attn.norm_k(k)
        if encoder_hidden_states is not None:
            tq = attn.norm_added_q(split(attn.add_q_proj(encoder_hidden_states)))
            tk = attn.norm_added_k(split(attn.add_k_proj(encoder_hidden_states)))
            q, k = torch.cat([tq, q], 1), torch.cat([tk, k], 1)
            v = torch.cat([split(attn.add_v_proj(encoder_hidden_states)), v], 1)
        if image_rotary_emb is not None:
            q, k = apply_rotary_emb(q, image_rotary_emb, sequence_dim=1), apply_rotary_emb(k, image_rotary_emb, sequence_dim=1)
        q, k, v = (x.transpose(1, 2) for x in (q, k, v))
        scores = (q * d ** -0.5) @ k.transpose(-1, -2)
        probs = torch.softmax(scores.float(), dim=-1)
        t = self.text
        self.store.append(torch.softmax(scores[:, :, t:, :t].float(), dim=-1).mean(1))  # (B, N, T)
        if self.text_store is not None and encoder_hidden_states is not None:
            self.text_store.append(torch.softmax(scores[:, :, :t, t:].float(), dim=-1).mean(1).transpose(1, 2))  # (B, N, T)
        out = (probs.to(v.dtype) @ v).transpose(1, 2).flatten(2)
        if encoder_hidden_states is None:
            return out
        text_out, image_out = out[:, : encoder_hidden_states.shape[1]], out[:, encoder_hidden_states.shape[1]:]
        return attn.to_out[1](attn.to_out[0](image_out)), attn.to_add_out(text_out)


class ConceptStream(BlockTaps):
    """Training only: ConceptAttention's concept stream carried through the dual-stream blocks
    during a training forward, reading the blocks as the capture does and by the capture's own
    maths (:func:`bridge.families.joint_concepts.concept_block`), keeping the chosen blocks'
    saliency (B, N, concepts) with its gradients; the image and text tokens never see the
    concepts."""

    def __init__(self, transformer, layers):
        self.transformer, self.layers = transformer, tuple(layers)
        self.stream = None
        self.saliency: list[torch.Tensor] = []
        self._hooks = self.tap(transformer)

    def begin(self, embeds: torch.Tensor) -> None:
        """Start a forward with these concepts' T5 states (concepts, T5 width)."""
        self.stream = self.transformer.context_embedder(embeds).unsqueeze(0)
        self.saliency = []

    def end(self) -> list[torch.Tensor]:
        saliency, self.saliency, self.stream, self._seen = self.saliency, [], None, {}
        return saliency

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    def tapping(self) -> bool:
        return self.stream is not None

    def on_block(self, index: int, block, k, v, out, kwargs: dict) -> None:
        self.stream, saliency = concept_block(block, k, v, out, self.stream, kwargs["temb"], kwargs.get("image_rotary_emb"))
        if index in self.layers:
            self.saliency.append(saliency)


def concept_ids(tokenizer, names) -> torch.Tensor:
    """(concepts, TEXT_POSITIONS) T5 ids of each concept on its own, as FluxPipeline encodes a
    prompt (padded, with its end token): the capture embeds a concept this way."""
    return tokenizer(list(names), padding="max_length", max_length=TEXT_POSITIONS, truncation=True,
                     return_tensors="pt").input_ids


def grounded_processors(transformer, store: list, text_positions: int, text_store: list | None = None) -> dict:
    return {name: GroundedFluxAttention(store, text_positions, text_store) for name in transformer.attn_processors}


def pack(z):
    """(B, C, H, W) latents → (B, H/2·W/2, 4C) tokens, as FluxPipeline packs them."""
    b, c, h, w = z.shape
    return z.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def image_ids(h: int, w: int, device) -> torch.Tensor:
    ids = torch.zeros(h, w, 3, device=device)
    ids[..., 1] += torch.arange(h, device=device)[:, None]
    ids[..., 2] += torch.arange(w, device=device)[None, :]
    return ids.reshape(h * w, 3)
