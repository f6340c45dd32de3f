"""Aggregation invariants on hand-made attention, where the right answer is known exactly.

Random tiny models attend almost uniformly, so their maps are smooth and bicubic upsampling
never undershoots; trained models attend sharply (the shapes model's unclamped maps reach
−0.14).  These inputs are sharp on purpose.
"""

import torch
import torch.nn.functional as F

from bridge.attention import Aggregator
from bridge.families import UNetFamily


def _layer(values: torch.Tensor) -> torch.Tensor:
    """(h, w, tokens) per-token maps → (batch 1, 2 equal heads, h·w, tokens) probabilities."""
    h, w, t = values.shape
    return values.reshape(1, 1, h * w, t).expand(1, 2, h * w, t).contiguous()


def test_bicubic_undershoot_is_clamped_per_layer_before_the_layers_are_summed():
    spike = torch.zeros(4, 4, 2)
    spike[1, 1, 0] = 1.0  # token 0: all attention on one position
    spike[..., 1] = 1 - spike[..., 0]  # token 1: everywhere but there
    flat = torch.full((4, 4, 2), 0.05)
    agg = Aggregator(((0,), (1,)), 2, (4, 4), (16, 16), False, "cpu")
    agg.add(_layer(spike), (4, 4))
    agg.add(_layer(flat), (4, 4))
    step, cumulative = agg.end_step()

    def up(m):  # (h, w, tokens) → (tokens, 16, 16), bicubic as DAAM upsamples
        return F.interpolate(m.permute(2, 0, 1)[None], size=(16, 16), mode="bicubic", align_corners=False)[0]

    assert up(spike).min() < -0.05  # the spike rings below zero: the case the clamp exists for
    expected = up(spike).clamp(min=0) + up(flat).clamp(min=0)
    torch.testing.assert_close(step, expected, rtol=1e-6, atol=1e-6)
    assert step.min() >= 0 and torch.equal(cumulative, step)
    assert (up(spike) + up(flat)).clamp(min=0).ne(expected).any()  # clamping after the sum would differ


def test_conditional_rows_are_the_second_half_under_cfg_and_every_row_without():
    rows = UNetFamily.conditional_rows
    assert rows(None, 2, True) == slice(1, 2)  # [unconditional, conditional]
    assert rows(None, 4, True) == slice(2, 4)  # two images: [u, u, c, c]
    assert rows(None, 1, False) == slice(0, 1)
    assert rows(None, 2, False) == slice(0, 2)  # two images, guidance off: both are conditional
