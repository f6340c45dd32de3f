"""Processors go only on cross-attention and come back after success and after an exception."""

import pytest
import torch

from bridge.attention import Aggregator, AttentionCapture, LayerFilter
from bridge.attention.processor import CaptureProcessor
from bridge.bus import Bus
from bridge.engine import GenerationRequest
from bridge.families.unet import cross_attention_modules


def _processors(unet):
    return {name: m.processor for name, m in unet.named_modules() if hasattr(m, "set_processor")}


def test_only_the_familys_sites_get_capture_processors(tiny_engine):
    """Cross-attention (word maps) and self-attention (region maps, read only while regions are
    set) are wrapped around their own processors; nothing else is touched, and all is restored."""
    from bridge.families.unet import self_attention_modules

    unet = tiny_engine.pipe.unet
    before = _processors(unet)
    cross = {n for n, _ in cross_attention_modules(unet)}
    own = {n for n, _ in self_attention_modules(unet)}
    assert cross and all(n.endswith("attn2") for n in cross) and own and all(n.endswith("attn1") for n in own)
    with AttentionCapture(tiny_engine.family):
        during = _processors(unet)
        for name, proc in during.items():
            if name in cross | own:
                assert isinstance(proc, CaptureProcessor) and proc.original is before[name]
            else:
                assert proc is before[name]
    assert _processors(unet) == before


def test_processors_restored_after_an_exception_inside_the_run(tiny_engine):
    unet = tiny_engine.pipe.unet
    before = _processors(unet)

    def explode(*_):
        raise RuntimeError("boom in the middle of a run")

    with pytest.raises(RuntimeError, match="boom"):
        with AttentionCapture(tiny_engine.family) as cap:
            cap.begin(Aggregator(((1,),), 77, (8, 8), (8, 8), True, "cpu"))
            tiny_engine.pipe("a cat", num_inference_steps=2, width=64, height=64, output_type="latent",
                             callback_on_step_end=explode)
    assert _processors(unet) == before


def test_engine_failure_is_a_failed_run_and_leaves_the_model_clean(tiny_engine, collect):
    before = _processors(tiny_engine.pipe.unet)

    class Exploding:
        def on_step(self, frame):  # the bus swallows sink errors: use should_stop to inject one instead
            pass

    def should_stop():
        raise RuntimeError("the stop check itself broke")

    end = tiny_engine.generate(GenerationRequest("a cat", steps=3), Bus([collect, Exploding()]), should_stop=should_stop)
    assert end.status == "failed" and "stop check itself broke" in end.error
    assert collect.end is end and end.steps_done == 1
    assert _processors(tiny_engine.pipe.unet) == before
    # and the engine is usable again
    assert tiny_engine.generate(GenerationRequest("a cat", steps=2), Bus()).status == "completed"


def test_cancel_stops_after_the_current_step(tiny_engine, collect):
    seen = []
    end = tiny_engine.generate(GenerationRequest("a dog", steps=10), Bus([collect]),
                               should_stop=lambda: len(collect.frames) >= 4 or seen.append(1))
    assert end.status == "cancelled" and end.steps_done == 4 and end.image is None
    assert [f.step for f in collect.frames] == [0, 1, 2, 3]


def test_layer_names_match_at_part_boundaries():
    """A name selector starts at a dotted part and ends at a part boundary, so Flux's block
    kinds and indices can be told apart (``transformer_blocks.1`` is not block 10 or a single block)."""
    from bridge.attention.capture import name_matches

    assert name_matches("up", "up_blocks.1.attentions.0.transformer_blocks.0.attn2")
    assert name_matches("up_blocks.1", "up_blocks.1.attentions.0.transformer_blocks.0.attn2")
    assert name_matches("attn2", "mid_block.attentions.0.transformer_blocks.0.attn2")
    assert name_matches("single", "single_transformer_blocks.4.attn")
    assert name_matches("transformer_blocks.1", "transformer_blocks.1.attn")
    assert not name_matches("transformer_blocks.1", "transformer_blocks.10.attn")
    assert not name_matches("transformer_blocks.1", "single_transformer_blocks.1.attn")
    assert name_matches("transformer_blocks.1", "down_blocks.0.attentions.0.transformer_blocks.1.attn2")
    assert not name_matches("blocks.1", "up_blocks.1.attentions.0")


def test_layer_filter_by_resolution_and_name(tiny_engine, collect):
    f = LayerFilter(["16", "up_blocks.1"])
    assert f.keeps("down_blocks.0.attentions.0.transformer_blocks.0.attn2", 16)
    assert f.keeps("up_blocks.1.attentions.0.transformer_blocks.0.attn2", 8)
    assert not f.keeps("down_blocks.0.attentions.0.transformer_blocks.0.attn2", 8)
    assert LayerFilter(None).everything

    def run(layers):
        c = type(collect)()
        tiny_engine.generate(GenerationRequest("a red apple", seed=2, steps=2, guidance=0.0, layers=layers), Bus([c]))
        return c.frames[-1].cumulative.astype("float32")

    everything, coarse, fine = run(None), run(("16",)), run(("8",))
    # The two resolutions partition the layers: their maps add up to all layers' maps.
    torch.testing.assert_close(torch.from_numpy(coarse + fine), torch.from_numpy(everything), atol=2e-2, rtol=2e-3)
    assert (coarse != fine).any()
