"""The SD3 family: joint-attention word maps equal an independent eager reference.

Tiny random StableDiffusion3Pipelines (two CLIP encoders, a T5 encoder on a trained
sentencepiece-style vocabulary, a 16-channel shifted VAE, a patch-2 SD3Transformer2DModel
whose last block is context_pre_only) are saved as real folders and loaded by
``Engine.load(folder)``.  The reference below hooks each block's joint attention inputs,
materialises q and k of the whole [image; text] sequence with the module's own projections
and norms, takes softmax(q·kᵀ/√d) over all keys in float64, keeps the image × text block,
averages heads over the conditional rows and aggregates as DAAM does.  Nothing is shared with
bridge/families/sd3.py.
"""

from __future__ import annotations

import gc
import math

import numpy as np
import pytest
import torch

from _pipelines import make_sd3_like
from _qk_reference import daam_reference
from bridge.attention import Aggregator, AttentionCapture
from bridge.bus import Bus
from bridge.engine import Engine, GenerationRequest

PROMPT = "a red apple, on a wooden table"


@pytest.fixture(scope="module")
def sd3_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd3")
    return {
        "sd3": make_sd3_like(root),
        "qk": make_sd3_like(root, "sd3-qk", qk_norm="rms_norm", dynamic_shift=True),
        "dual": make_sd3_like(root, "sd35-dual", qk_norm="rms_norm", dual_attention_layers=(0, 1)),
    }


@pytest.fixture(scope="module")
def sd3_engine(sd3_dirs):
    return Engine.load(str(sd3_dirs["sd3"]), device="cpu", progress=False)


class JointReference:
    """Hooks every block's ``attn`` inputs and the transformer's latent size; redoes the maps by hand."""

    def __init__(self, transformer):
        self.transformer = transformer
        self.calls, self.boundaries, self._hooks = [], [], []
        self._grid, self._skipping = None, False

    def __enter__(self):
        patch = self.transformer.config.patch_size

        def outer(module, args, kwargs):
            x = kwargs.get("hidden_states", args[0] if args else None)
            self._grid = (x.shape[-2] // patch, x.shape[-1] // patch)
            self._skipping = bool(kwargs.get("skip_layers"))  # a skip-layer-guidance pass
        self._hooks.append(self.transformer.register_forward_pre_hook(outer, with_kwargs=True))
        for block in self.transformer.transformer_blocks:
            self._hooks.append(block.attn.register_forward_pre_hook(self._attn_hook, with_kwargs=True))
        return self

    def __exit__(self, *exc):
        for h in self._hooks:
            h.remove()

    def _attn_hook(self, attn, args, kwargs):
        if self._skipping:
            return
        x, text = kwargs["hidden_states"], kwargs["encoder_hidden_states"]
        heads = attn.heads

        def split(t):
            return t.unflatten(-1, (heads, -1)).transpose(1, 2)

        q, k = split(attn.to_q(x)), split(attn.to_k(x))
        tq, tk = split(attn.add_q_proj(text)), split(attn.add_k_proj(text))
        if attn.norm_q is not None:
            q, k = attn.norm_q(q), attn.norm_k(k)
            tq, tk = attn.norm_added_q(tq), attn.norm_added_k(tk)
        joint_q = torch.cat([q, tq], dim=2).double()
        joint_k = torch.cat([k, tk], dim=2).double()
        d = joint_q.shape[-1]
        probs = torch.softmax(joint_q @ joint_k.transpose(-1, -2) / math.sqrt(d), dim=-1)  # (B, H, N+T, N+T)
        n = x.shape[1]
        self.calls.append({"block": probs[:, :, :n, n:].mean(dim=1), "grid": self._grid,  # image × text, heads averaged
                           "image": probs[:, :, :n, :n].mean(dim=1)})  # image × image: the region maps' block

    def mark_step(self):
        self.boundaries.append(len(self.calls))

    def reference(self, token_indices, cfg: bool, map_hw):
        steps, start = [], 0
        for end in self.boundaries:
            layers = []
            for call in self.calls[start:end]:
                block = call["block"]
                b = block.shape[0]
                rows = block[b // 2:] if cfg else block
                layers.append((rows.sum(0), call["grid"]))
            steps.append(layers)
            start = end
        return daam_reference(steps, token_indices, map_hw)


def _run(engine, req, collect):
    class Marker:
        def on_step(self, frame):
            rec.mark_step()

    req = engine.validate(req)
    with JointReference(engine.pipe.transformer) as rec:
        end = engine.generate(req, Bus([Marker(), collect]))
    assert end.status == "completed", end.error
    ref = rec.reference(collect.start.word_token_indices, engine.uses_cfg(req.guidance), collect.start.map_size)
    assert len(collect.frames) == req.steps == len(ref)
    for frame, (ref_step, ref_cum) in zip(collect.frames, ref):
        np.testing.assert_allclose(frame.maps.astype(np.float64), ref_step, rtol=2**-10, atol=1e-4)
        np.testing.assert_allclose(frame.cumulative.astype(np.float64), ref_cum, rtol=2**-10, atol=1e-4)
        assert frame.maps.max() > 0
    return end


def test_family_defaults_and_sites(sd3_engine):
    family = sd3_engine.family
    assert sd3_engine.loaded.family == "sd3" and type(sd3_engine.pipe).__name__ == "StableDiffusion3Pipeline"
    assert sd3_engine.native_size == (64, 64)  # sample_size 8 × VAE factor 8
    assert sd3_engine.default_guidance == 7.0 and sd3_engine.max_steps == 1000
    assert family.size_multiple == 16 and family.layer_factors == (16,)
    names = [s.name for s in family.attention_sites()]
    assert names == [f"transformer_blocks.{i}.attn" for i in range(3)]
    assert sd3_engine.pipe.transformer.transformer_blocks[-1].attn.context_pre_only  # the last block is a site too
    assert family.layer_geometry(4 * 6, (8, 12)) == (4, 6, 16)
    with pytest.raises(Exception, match="multiple of 16"):
        sd3_engine.validate(GenerationRequest("x", width=72, height=64))


def test_words_join_clip_tokens_and_t5_pieces(sd3_engine):
    family = sd3_engine.family
    wm = family.map_words(PROMPT)
    assert wm.words == ("a", "red", "apple", ",", "on", "a", "wooden", "table")
    assert wm.sequence_length == 77 + 256  # CLIP positions, then the pipeline's max_sequence_length of T5
    for ix in wm.token_indices:
        assert any(i < 77 for i in ix) and any(i >= 77 for i in ix)  # each word in both parts
    assert wm.token_indices[0] == (1, 77)  # after CLIP's start token; T5 has none


def test_maps_equal_the_eager_reference_with_cfg_non_square(sd3_engine, collect):
    end = _run(sd3_engine, GenerationRequest(PROMPT, seed=3, steps=3, width=96, height=64), collect)
    assert collect.start.extra["cfg"] is True and collect.start.map_size == (48, 72)
    assert end.image.shape == (64, 96, 3)


def test_maps_equal_the_eager_reference_without_cfg(sd3_engine, collect):
    _run(sd3_engine, GenerationRequest(PROMPT, seed=4, steps=2, guidance=0.0), collect)
    assert collect.start.extra["cfg"] is False


@pytest.mark.parametrize("text_part", ["clip", "t5"])
def test_one_text_part_only(sd3_engine, collect, text_part):
    family = sd3_engine.family
    family.text_part = text_part
    try:
        _run(sd3_engine, GenerationRequest(PROMPT, seed=5, steps=1, include_special=True), collect)
    finally:
        family.text_part = "both"
    positions = [i for ix in collect.start.word_token_indices for i in ix]
    assert all(i < 77 for i in positions) if text_part == "clip" else all(i >= 77 for i in positions)


def test_qk_norm_and_dynamic_shift(sd3_dirs, collect):
    engine = Engine.load(str(sd3_dirs["qk"]), device="cpu", progress=False)
    assert engine.pipe.transformer.transformer_blocks[0].attn.norm_added_k is not None
    assert engine.pipe.scheduler.config.use_dynamic_shifting
    _run(engine, GenerationRequest(PROMPT, seed=6, steps=2, width=64, height=96), collect)
    assert not any(math.isnan(f.timestep) for f in collect.frames)  # mu came from the family


def test_dual_attention_blocks_read_only_the_joint_attention(sd3_dirs, collect):
    engine = Engine.load(str(sd3_dirs["dual"]), device="cpu", progress=False)
    blocks = engine.pipe.transformer.transformer_blocks
    assert blocks[0].attn2 is not None and blocks[2].attn2 is None
    assert all(s.module is not b.attn2 for s in engine.family.attention_sites() for b in blocks)
    _run(engine, GenerationRequest(PROMPT, seed=7, steps=2), collect)


def _plain_and_captured(pipe, family, **kw):
    def latents():
        with torch.no_grad():
            return pipe(PROMPT, num_inference_steps=3, width=96, height=64, output_type="latent",
                        generator=torch.Generator().manual_seed(1), **kw).images

    plain = latents()
    agg = Aggregator(((1, 77),), 333, (8, 12), (8, 12), kw.get("guidance_scale", 7.0) > 1, "cpu")
    with AttentionCapture(family) as cap:
        cap.begin(agg)
        captured = latents()
    return plain, captured, agg


@pytest.mark.parametrize("guidance", [7.0, 0.0])
def test_captured_run_is_bit_identical_to_plain(sd3_engine, guidance):
    plain, captured, agg = _plain_and_captured(sd3_engine.pipe, sd3_engine.family, guidance_scale=guidance)
    assert agg.layer_calls == 3 * 3
    assert torch.equal(captured, plain)


def test_engine_image_is_bit_identical_to_the_plain_pipeline(sd3_engine, collect):
    req = sd3_engine.validate(GenerationRequest(PROMPT, seed=11, steps=2, width=96, height=64))
    end = sd3_engine.generate(req, Bus([collect]))
    with torch.inference_mode():
        out = sd3_engine.pipe(PROMPT, num_inference_steps=2, guidance_scale=req.guidance, width=96, height=64,
                              output_type="np", generator=torch.Generator("cpu").manual_seed(11))
    plain = np.clip(np.rint(np.asarray(out.images[0]) * 255), 0, 255).astype(np.uint8)
    assert np.array_equal(end.image, plain)


def test_skip_layer_guidance_passes_do_not_feed_the_maps(sd3_engine):
    """SLG reruns the transformer on the conditional half with layers skipped: those calls are no map."""
    pipe, steps = sd3_engine.pipe, 4
    words = sd3_engine.family.map_words(PROMPT)
    agg = Aggregator(words.token_indices, words.sequence_length, (4, 4), (4, 4), True, "cpu")
    calls, ours = [], []

    def on_step_end(_p, i, t, kw):
        calls.append(agg.layer_calls)
        ours.append(agg.end_step()[0].numpy().copy())
        rec.mark_step()
        return kw

    with JointReference(pipe.transformer) as rec, AttentionCapture(sd3_engine.family) as cap:
        cap.begin(agg)
        with torch.no_grad():
            pipe(PROMPT, num_inference_steps=steps, guidance_scale=7.0, width=32, height=32, output_type="latent",
                 generator=torch.Generator().manual_seed(2), callback_on_step_end=on_step_end,
                 skip_guidance_layers=[1], skip_layer_guidance_start=0.0, skip_layer_guidance_stop=1.0)
    assert calls == [3] * steps  # the extra pass (2 more calls per step) fed nothing
    for step, (ref_step, _) in zip(ours, rec.reference(words.token_indices, True, (4, 4))):
        assert np.abs(step - ref_step).max() < 1e-4


def test_preview_of_a_16_channel_shifted_vae(sd3_engine, collect):
    assert sd3_engine.pipe.vae.config.latent_channels == 16 and sd3_engine.pipe.vae.config.shift_factor
    assert len(sd3_engine.previewer.weight) == 16
    end = sd3_engine.generate(GenerationRequest(PROMPT, seed=1, steps=2, vae_every=1), Bus([collect]))
    assert end.status == "completed"
    linear = sd3_engine.previewer.linear(torch.zeros(1, 16, 4, 4))
    assert linear.shape == (4, 4, 3)
    for frame in collect.frames:
        assert frame.preview.shape == (64, 64, 3) and frame.preview.dtype == np.uint8


def test_memory_does_not_grow_with_steps(sd3_engine):
    """The aggregator holds one step: after every step's end the same tensors are alive."""
    pipe, family = sd3_engine.pipe, sd3_engine.family
    words = family.map_words(PROMPT)
    agg = Aggregator(words.token_indices, words.sequence_length, (4, 4), (64, 64), True, "cpu")
    alive, pending = [], []

    def on_step_end(_p, i, t, kw):
        pending.append(agg.layer_calls)
        agg.end_step()
        gc.collect()
        alive.append(sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor)))
        return kw

    with AttentionCapture(family) as cap:
        cap.begin(agg)
        with torch.no_grad():
            pipe(PROMPT, num_inference_steps=8, width=32, height=32, output_type="latent",
                 generator=torch.Generator().manual_seed(0), callback_on_step_end=on_step_end)
    assert pending == [3] * 8 and agg.layer_calls == 0
    assert len(set(alive[1:])) == 1, alive


def test_chunked_normaliser_equals_one_softmax_over_all_keys(monkeypatch):
    """Chunks of one query or of all queries give the joint softmax's text block."""
    from bridge.families import sd3

    g = torch.Generator().manual_seed(0)
    q, k, tk = (torch.randn(2, 3, n, 8, generator=g) * 3 for n in (20, 20, 7))
    full = torch.softmax(torch.cat([q @ k.transpose(-1, -2), q @ tk.transpose(-1, -2)], -1).double() * 0.35, -1)
    expected = full[..., 20:].mean(1, keepdim=True)
    for budget in (1, 4 * 2 * 3 * 27 * 5, 1 << 30):  # 1 query, 5 queries, everything per chunk
        monkeypatch.setattr(sd3, "CHUNK_BYTES", budget)
        got = sd3.joint_text_probabilities(q, k, tk, 0.35)
        assert got.shape == (2, 1, 20, 7) and torch.allclose(got.double(), expected, atol=1e-6)


def test_region_maps_are_the_image_block_of_the_joint_softmax(sd3_engine, collect):
    """A box and a pixel on SD3: each region's rows of the image × image block of the joint
    softmax (normalised over image and text keys), weighted by its coverage, heads averaged,
    upsampled and summed over blocks, as the reference computes them in float64."""
    import torch.nn.functional as F

    from _qk_reference import reference_coverage
    from bridge.regions import from_dict, parse_list

    specs = [{"id": "box", "box": [8, 8, 40, 24]}, {"id": "dot", "pixel": [50, 50]}]
    req = sd3_engine.validate(GenerationRequest(PROMPT, seed=2, steps=2, guidance=5.0, width=64, height=64,
                                                regions=parse_list(specs, from_dict)))

    class Marker:
        def on_step(self, frame):
            rec.mark_step()

    with JointReference(sd3_engine.pipe.transformer) as rec:
        end = sd3_engine.generate(req, Bus([Marker(), collect]))
    assert end.status == "completed", end.error
    map_hw = collect.start.map_size
    start = 0
    for frame, stop in zip(collect.frames, rec.boundaries):
        want = torch.zeros(len(specs), *map_hw, dtype=torch.float64)
        for call in rec.calls[start:stop]:
            h, w = call["grid"]
            weights = torch.from_numpy(np.stack([reference_coverage(s, h, w, (64, 64)) for s in specs]))
            block = call["image"]
            rows = block[block.shape[0] // 2:].sum(0)  # CFG: the conditional half
            layer = (weights @ rows).reshape(1, len(specs), h, w)
            want += F.interpolate(layer, size=map_hw, mode="bicubic", align_corners=False)[0].clamp(min=0)
        start = stop
        assert [r["id"] for r in frame.regions] == ["box", "dot"]
        np.testing.assert_allclose(frame.kinds["self"].astype(np.float64), want.numpy(), rtol=2**-10, atol=1e-4)
