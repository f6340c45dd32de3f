"""A cross-attention processor that computes the normal attention and hands DAAM its probabilities.

It does what diffusers' default processor does (projections, optional norms, mask, SDPA,
output projection, residual, rescale), so the layer output is exactly the plain one, and in
addition forms softmax(QKᵀ·scale) explicitly for the conditional half of the batch: for
cross-attention the key length is the text length (77), so these probabilities are small.
When no run is being captured, or the layer is filtered out, the original processor runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class CaptureProcessor:
    def __init__(self, name: str, original, capture):
        self.name = name
        self.original = original
        self.capture = capture  # the AttentionCapture that owns this processor

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        self.capture.check_abort()
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

        # The layer output: the same SDPA call as diffusers' default processor, so a captured
        # run computes bit for bit what a plain run computes.
        default_scale = attn.scale == head_dim ** -0.5
        hidden_states = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False,
            scale=None if default_scale else attn.scale,
        )
        # The heat maps: softmax(QKᵀ·scale) for the conditional half only, in float32 (SD 2.x
        # also asks for float32 scores, which would overflow in half precision).
        cond = aggregator.conditional(batch)
        q, k = query[cond], key[cond]
        if attn.upcast_attention:
            q, k = q.float(), k.float()
        scores = torch.matmul(q * attn.scale, k.transpose(-1, -2))
        if attention_mask is not None:
            scores = scores + attention_mask[cond].to(scores.dtype)
        aggregator.add(scores.softmax(dim=-1, dtype=torch.float32))

        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor
