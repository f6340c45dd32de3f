"""The DAAM maps equal an independent plain reference (tests/_qk_reference.py) within 1e-4.

Runs the shipped tiny model (cross-attention at two resolutions, CFG) on CPU, square and
non-square (odd latent sides, so each level's size comes from ceil division, not sqrt), with
guidance on and off.
"""

import numpy as np
import pytest
import torch

from _qk_reference import QKRecorder
from bridge.attention import Aggregator, AttentionCapture, map_words
from bridge.bus import Bus
from bridge.engine import GenerationRequest
from bridge.families import UNetFamily

PROMPT = "a red apple, on a wooden table"


def _run_direct(pipe, prompt, guidance, width, height, map_hw, steps=3, seed=3, images=1):
    words = map_words(pipe.tokenizer, prompt)
    cfg = guidance > 1
    ours = []
    agg = Aggregator(words.token_indices, 77, (height // 8, width // 8), map_hw, cfg, "cpu")
    with QKRecorder(pipe.unet) as rec, AttentionCapture(UNetFamily(pipe)) as cap:
        cap.begin(agg)

        def on_step_end(_p, i, t, kw):
            step, cum = agg.end_step()
            ours.append((step.numpy().copy(), cum.numpy().copy()))
            rec.mark_step()
            return kw

        with torch.no_grad():
            pipe(prompt, num_inference_steps=steps, guidance_scale=guidance, width=width, height=height,
                 generator=torch.Generator().manual_seed(seed), output_type="latent", callback_on_step_end=on_step_end,
                 num_images_per_prompt=images)
    return ours, rec.reference(words.token_indices, cfg, map_hw), words


@pytest.mark.parametrize(
    "guidance,width,height,map_hw",
    [
        (7.5, 64, 64, (64, 64)),  # CFG, square
        (0.0, 64, 64, (32, 32)),  # guidance off (Turbo-like): the whole batch is kept
        (7.5, 96, 64, (48, 72)),  # CFG, non-square: latent 8×12
        (0.0, 72, 40, (20, 36)),  # non-square with odd latent sides: 5×9, then 3×5
    ],
)
def test_aggregation_equals_plain_reference(tiny_engine, guidance, width, height, map_hw):
    ours, ref, words = _run_direct(tiny_engine.pipe, PROMPT, guidance, width, height, map_hw)
    assert len(ours) == len(ref) == 3
    for (step, cum), (ref_step, ref_cum) in zip(ours, ref):
        assert step.shape == ref_step.shape == (len(words.words), *map_hw)
        assert np.abs(step - ref_step).max() < 1e-4
        assert np.abs(cum - ref_cum).max() < 1e-4
        assert step.min() >= 0 and step.max() > 0


@pytest.mark.parametrize("guidance", [7.5, 0.0])
def test_two_images_per_prompt_keep_exactly_the_conditional_rows(tiny_engine, guidance):
    """Batch 4 = [u, u, c, c] under CFG keeps the last two rows; batch 2 without guidance keeps both."""
    ours, ref, _ = _run_direct(tiny_engine.pipe, PROMPT, guidance, 64, 64, (16, 16), steps=1, images=2)
    (step, cum), (ref_step, ref_cum) = ours[0], ref[0]
    assert np.abs(step - ref_step).max() < 1e-4 and np.abs(cum - ref_cum).max() < 1e-4


def test_engine_frames_carry_the_reference_maps_as_float16(tiny_engine, collect):
    class Marker:
        def on_step(self, frame):
            rec.mark_step()

    req = GenerationRequest(PROMPT, seed=5, steps=3, guidance=7.5, width=96, height=64)
    with QKRecorder(tiny_engine.pipe.unet) as rec:
        end = tiny_engine.generate(req, Bus([Marker(), collect]))
    assert end.status == "completed"
    start, frames = collect.start, collect.frames
    ref = rec.reference(start.word_token_indices, True, start.map_size)
    assert len(frames) == 3
    for frame, (ref_step, ref_cum) in zip(frames, ref):
        assert frame.maps.dtype == np.float16 and frame.maps.shape == ref_step.shape
        # float16 keeps 11 significant bits: compare with its own rounding allowance
        np.testing.assert_allclose(frame.maps.astype(np.float64), ref_step, rtol=2**-10, atol=1e-4)
        np.testing.assert_allclose(frame.cumulative.astype(np.float64), ref_cum, rtol=2**-10, atol=1e-4)


@pytest.mark.parametrize("guidance", [7.5, 0.0])
def test_captured_run_produces_the_same_latents_as_a_plain_run(tiny_engine, guidance):
    pipe = tiny_engine.pipe

    def latents():
        with torch.no_grad():
            return pipe("a red apple", num_inference_steps=3, guidance_scale=guidance, width=64, height=64,
                        generator=torch.Generator().manual_seed(1), output_type="latent").images

    plain = latents()
    agg = Aggregator(((1,), (2,)), 77, (8, 8), (8, 8), guidance > 1, "cpu")
    with AttentionCapture(tiny_engine.family) as cap:
        cap.begin(agg)
        captured = latents()
    assert agg.layer_calls > 0  # the capture did see the attention
    assert torch.equal(captured, plain)  # bit for bit: the layer output is the same SDPA call
