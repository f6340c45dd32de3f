"""A cross-attention processor that computes attention exactly and hands DAAM its probabilities.

It does what diffusers' default processor does (projections, optional norms, mask, output
projection, residual, rescale) but forms softmax(QKᵀ·scale) explicitly: for cross-attention the
key length is the text length (77), so the probabilities are small and the same tensor yields
both the layer output and the heat map.  Only the conditional half of a CFG batch is handed to
the aggregator.  When no run is being captured, or the layer is filtered out, the original
processor runs unchanged.
"""

from __future__ import annotations

import torch


class CaptureProcessor:
    def __init__(self, name: str, original, capture):
        self.name = name
        self.original = original
        self.capture = capture  # the AttentionCapture that owns this processor

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        aggregator = self.capture.aggregator
        if aggregator is None or encoder_hidden_states is None or not self.capture.wants(self.name, hidden_states, aggregator):
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch, _, _ = hidden_states.shape
        text_len = encoder_hidden_states.shape[1]
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, text_len, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        # SD 2.x asks for float32 scores (fp16 would overflow); the softmax itself is always
        # taken in float32, since these probabilities are the heat maps.
        if attn.upcast_attention:
            query, key = query.float(), key.float()
        scores = torch.matmul(query * attn.scale, key.transpose(-1, -2))
        if attention_mask is not None:
            scores = scores + attention_mask.to(scores.dtype)
        probs = scores.softmax(dim=-1, dtype=torch.float32)
        aggregator.add(probs[aggregator.conditional(batch)])

        hidden_states = torch.matmul(probs.to(value.dtype), value)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor
