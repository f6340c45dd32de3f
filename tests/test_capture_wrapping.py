"""The capture wraps the model's own processors: whatever they compute survives, bit for bit.

Three pipelines whose cross-attention is not diffusers' default processor, each built from
the shipped tiny model: an IP-Adapter (image keys beside the text keys; encoder states
arrive as a tuple), a custom processor with its own keyword argument, and fused projections
(keys from ``to_kv``).  For each: the captured run's latents equal the plain run's exactly,
and its maps equal the independent q/k reference (for the IP-Adapter, over the text tokens).
"""

import numpy as np
import pytest
import torch

from _qk_reference import QKRecorder
from bridge.attention import Aggregator, AttentionCapture, map_words
from bridge.families import UNetFamily
from bridge.models.resolve import BUILTIN_DIR

PROMPT = "a red apple, on a wooden table"
STEPS = 2


def _tiny_pipe():
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(BUILTIN_DIR / "tiny", safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _run(pipe, capture: bool, guidance=7.5, **call):
    """Latents of a 2-step 64×64 run; with ``capture``, also our maps and the reference (a function)."""
    def latents(**extra):
        with torch.no_grad():
            return pipe(PROMPT, num_inference_steps=STEPS, guidance_scale=guidance, width=64, height=64,
                        generator=torch.Generator().manual_seed(3), output_type="latent", **call, **extra).images

    if not capture:
        return latents()
    words = map_words(pipe.tokenizer, PROMPT)
    agg = Aggregator(words.token_indices, 77, (8, 8), (16, 16), guidance > 1, "cpu")
    ours = []

    def on_step_end(_p, i, t, kw):
        step, cum = agg.end_step()
        ours.append((step.numpy().copy(), cum.numpy().copy()))
        rec.mark_step()
        return kw

    with QKRecorder(pipe.unet) as rec, AttentionCapture(UNetFamily(pipe)) as cap:
        cap.begin(agg)
        out = latents(callback_on_step_end=on_step_end)
    return out, ours, lambda: rec.reference(words.token_indices, guidance > 1, (16, 16))


def _assert_maps_match(ours, reference):
    ref = reference()
    assert len(ours) == len(ref) == STEPS
    for (step, cum), (ref_step, ref_cum) in zip(ours, ref):
        assert step.max() > 0
        np.testing.assert_allclose(step, ref_step, atol=1e-4)
        np.testing.assert_allclose(cum, ref_cum, atol=1e-4)


def _ip_adapter_state_dict(unet, image_embed_dim: int) -> dict:
    """Random weights in the published IP-Adapter layout: an image projection to 4 tokens,
    and to_k_ip / to_v_ip per cross-attention layer (numbered 1, 3, 5, … as in the files)."""
    g = torch.Generator().manual_seed(11)
    cross = unet.config.cross_attention_dim
    image_proj = {"proj.weight": torch.randn(4 * cross, image_embed_dim, generator=g) * 0.2,
                  "proj.bias": torch.zeros(4 * cross), "norm.weight": torch.ones(cross), "norm.bias": torch.zeros(cross)}
    ip, key_id = {}, 1
    channels = unet.config.block_out_channels
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = channels[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(channels))[int(name[len("up_blocks.")])]
        else:
            hidden = channels[int(name[len("down_blocks.")])]
        ip[f"{key_id}.to_k_ip.weight"] = torch.randn(hidden, cross, generator=g) * 0.2
        ip[f"{key_id}.to_v_ip.weight"] = torch.randn(hidden, cross, generator=g) * 0.2
        key_id += 2
    return {"image_proj": image_proj, "ip_adapter": ip}


@pytest.fixture(scope="module")
def ip_pipe():
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    pipe = _tiny_pipe()
    torch.manual_seed(5)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8,
        projection_dim=16,
    ))
    pipe.register_modules(image_encoder=encoder)
    pipe.unet._load_ip_adapter_weights([_ip_adapter_state_dict(pipe.unet, 16)])
    assert {type(p) for n, p in pipe.unet.attn_processors.items() if "attn2" in n} == {IPAdapterAttnProcessor2_0}
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    return pipe, {"ip_adapter_image": image}


def test_ip_adapter_runs_captured_with_text_maps_and_the_plain_image(ip_pipe):
    pipe, call = ip_pipe
    plain = _run(pipe, False, **call)
    without_image_keys = _run(pipe, False, ip_adapter_image=torch.zeros_like(call["ip_adapter_image"]))
    assert not torch.equal(plain, without_image_keys)  # the image prompt does steer this model
    captured, ours, ref = _run(pipe, True, **call)
    assert torch.equal(captured, plain)
    _assert_maps_match(ours, ref)
    # the IP-Adapter's processors, with their weights, are back in the model's module tree
    assert any(n.endswith("attn2.processor.to_k_ip.0") for n, _ in pipe.unet.named_modules())


class GainProcessor:
    """diffusers' default processor, with its output scaled by ``gain`` (a cross_attention_kwargs entry)."""

    def __init__(self):
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.inner = AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, gain=1.0):
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb) * gain


def test_a_custom_processor_keeps_its_behaviour_and_its_arguments_under_capture():
    pipe = _tiny_pipe()
    default = _run(pipe, False)
    pipe.unet.set_attn_processor(GainProcessor())
    call = {"cross_attention_kwargs": {"gain": 0.5}}
    plain = _run(pipe, False, **call)
    assert not torch.equal(plain, default)  # the gain changes the image ...
    captured, ours, ref = _run(pipe, True, **call)
    assert torch.equal(captured, plain)  # ... and reaches the processor unchanged under capture
    _assert_maps_match(ours, ref)


def test_fused_projections_are_read_from_to_kv():
    pipe = _tiny_pipe()
    _, unfused_maps, _ = _run(pipe, True)
    pipe.fuse_qkv_projections()
    assert all(getattr(m, "to_kv", None) is not None for n, m in pipe.unet.named_modules() if n.endswith("attn2"))
    plain = _run(pipe, False)
    words = map_words(pipe.tokenizer, PROMPT)
    agg = Aggregator(words.token_indices, 77, (8, 8), (16, 16), True, "cpu")
    with AttentionCapture(UNetFamily(pipe)) as cap:
        cap.begin(agg)
        fused = _run(pipe, False, callback_on_step_end=lambda p, i, t, kw: kw)
        both_steps, _ = agg.end_step()  # no step ended in between: the sum over both steps
    assert torch.equal(fused, plain)
    # the same keys from one fused matrix: equal to the unfused maps up to float rounding
    np.testing.assert_allclose(both_steps.numpy(), unfused_maps[-1][1], atol=1e-4)


class PassThrough:
    """A processor that attends with nothing the capture can tap: the layer is skipped."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        return hidden_states


def test_a_processor_without_the_tapped_projections_runs_and_gives_no_map(caplog):
    pipe = _tiny_pipe()
    pipe.unet.set_attn_processor({n: PassThrough() if "attn2" in n else p for n, p in pipe.unet.attn_processors.items()})
    plain = _run(pipe, False)
    with caplog.at_level("WARNING", logger="bridge.attention.capture"):
        captured, ours, _ = _run(pipe, True)
    assert torch.equal(captured, plain)
    assert all(not step.any() for step, _ in ours)
    warned = [r for r in caplog.records if "gives no map" in r.getMessage()]
    assert len(warned) == 7  # once per layer, not once per call
