"""The Flux family: joint-attention word maps of dual- and single-stream blocks equal an eager reference.

Tiny random FluxPipelines (a CLIP encoder, a T5 encoder on a trained sentencepiece-style
vocabulary, a shifted VAE, a FluxTransformer2DModel with dual-stream and single-stream blocks
and 3-axis rotary embeddings; schnell-style and guidance-distilled dev-style) are saved as real
folders and loaded by ``Engine.load(folder)``.  The reference below hooks every block's
attention inputs, forms q and k of the whole [text; image] sequence with the module's own
projections and norms, applies the rotary embedding written out here (pairs of features
rotated by the angle whose cos and sin the call carries), takes softmax(q·kᵀ/√d) over all keys
in float64 and keeps the image × text block, heads averaged.  A transformer call is
conditional when its text states are the prompt's own (true CFG runs the negative prompt as a
second call).  Nothing is shared with bridge/families/flux.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _pipelines import make_flux_like
from _qk_reference import daam_reference, reference_coverage
from bridge.attention import Aggregator, AttentionCapture
from bridge.bus import Bus
from bridge.engine import Engine, GenerationRequest
from bridge.errors import InvalidRequest

PROMPT = "a red apple, on a wooden table"


@pytest.fixture(scope="module")
def flux_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("flux")
    return {"schnell": make_flux_like(root), "dev": make_flux_like(root, "flux-dev", guidance_embeds=True)}


@pytest.fixture(scope="module")
def flux_engine(flux_dirs):
    return Engine.load(str(flux_dirs["schnell"]), device="cpu", progress=False)


def rotate(x, cos, sin):
    """x: (B, S, H, D); feature pairs (2i, 2i+1) turned by the angle of position s."""
    pairs = x.unflatten(-1, (-1, 2))
    turned = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    return x * cos[None, :, None, :] + turned * sin[None, :, None, :]


class FluxReference:
    """Hooks every block's ``attn`` inputs and each transformer call's text; redoes the maps by hand."""

    def __init__(self, pipe, prompt: str, image_hw: tuple[int, int], keep=lambda name: True):
        self.transformer = pipe.transformer
        with torch.no_grad():
            self.prompt_text = pipe.encode_prompt(prompt, prompt_2=None)[0]  # what a conditional call attends to
        self.grid = (image_hw[0] // 16, image_hw[1] // 16)
        self.keep = keep
        self.calls, self.boundaries, self._hooks = [], [], []
        self._conditional = True

    def __enter__(self):
        def outer(module, args, kwargs):
            self._conditional = torch.equal(kwargs["encoder_hidden_states"], self.prompt_text)
        self._hooks.append(self.transformer.register_forward_pre_hook(outer, with_kwargs=True))
        for i, block in enumerate(self.transformer.transformer_blocks):
            self._hooks.append(block.attn.register_forward_pre_hook(self._hook(f"transformer_blocks.{i}.attn"), with_kwargs=True))
        for i, block in enumerate(self.transformer.single_transformer_blocks):
            self._hooks.append(block.attn.register_forward_pre_hook(self._hook(f"single_transformer_blocks.{i}.attn"), with_kwargs=True))
        return self

    def __exit__(self, *exc):
        for h in self._hooks:
            h.remove()

    def _hook(self, name):
        def hook(attn, args, kwargs):
            if not self._conditional or not self.keep(name):
                return
            x, text = kwargs["hidden_states"], kwargs.get("encoder_hidden_states")
            d = attn.head_dim

            def split(t):
                return t.unflatten(-1, (-1, d))  # (B, S, H, d)

            q, k = attn.norm_q(split(attn.to_q(x))), attn.norm_k(split(attn.to_k(x)))
            if text is not None:  # dual-stream: the text's own projections, in front
                tq, tk = attn.norm_added_q(split(attn.add_q_proj(text))), attn.norm_added_k(split(attn.add_k_proj(text)))
                q, k = torch.cat([tq, q], dim=1), torch.cat([tk, k], dim=1)
            cos, sin = kwargs["image_rotary_emb"]
            q, k = rotate(q.double(), cos.double(), sin.double()), rotate(k.double(), cos.double(), sin.double())
            q, k = q.transpose(1, 2), k.transpose(1, 2)
            probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)  # (B, H, T+N, T+N)
            t = self.prompt_text.shape[1]
            self.calls.append({"name": name, "block": probs[:, :, t:, :t].mean(dim=1), "image": probs[:, :, t:, t:].mean(dim=1)})
        return hook

    def mark_step(self):
        self.boundaries.append(len(self.calls))

    def reference(self, token_indices, map_hw):
        steps, start = [], 0
        for end in self.boundaries:
            steps.append([(call["block"].sum(0), self.grid) for call in self.calls[start:end]])
            start = end
        return daam_reference(steps, token_indices, map_hw)


class Marker:
    def __init__(self):
        self.rec = None

    def on_step(self, frame):
        self.rec.mark_step()


def _run(engine, req, collect, keep=lambda name: True):
    req = engine.validate(req)
    marker = Marker()
    with FluxReference(engine.pipe, req.prompt, (req.height, req.width), keep) as rec:
        marker.rec = rec
        end = engine.generate(req, Bus([marker, collect]))
    assert end.status == "completed", end.error
    ref = rec.reference(collect.start.word_token_indices, collect.start.map_size)
    assert len(collect.frames) == req.steps == len(ref)
    for frame, (ref_step, ref_cum) in zip(collect.frames, ref):
        np.testing.assert_allclose(frame.maps.astype(np.float64), ref_step, rtol=2**-10, atol=1e-5)
        np.testing.assert_allclose(frame.cumulative.astype(np.float64), ref_cum, rtol=2**-10, atol=1e-5)
        assert frame.maps.max() > 0
    return end, rec


def test_family_defaults_and_sites(flux_engine, flux_dirs):
    family = flux_engine.family
    assert flux_engine.loaded.family == "flux" and type(flux_engine.pipe).__name__ == "FluxPipeline"
    assert flux_engine.native_size == (1024, 1024) and flux_engine.default_guidance == 0.0
    assert family.size_multiple == 16 and family.layer_factors == (16,) and not family.embeds_guidance
    names = [s.name for s in family.attention_sites()]
    assert names == ["transformer_blocks.0.attn", "transformer_blocks.1.attn",
                     "single_transformer_blocks.0.attn", "single_transformer_blocks.1.attn"]
    assert family.layer_geometry(3 * 5, (6, 10)) == (3, 5, 16)
    with pytest.raises(InvalidRequest, match="multiple of 16"):
        flux_engine.validate(GenerationRequest("x", width=72, height=64))
    dev = Engine.load(str(flux_dirs["dev"]), device="cpu", progress=False)
    assert dev.family.embeds_guidance and dev.default_guidance == 3.5 and not dev.uses_cfg(3.5)


def test_words_are_t5_pieces_over_the_pipelines_sequence(flux_engine):
    wm = flux_engine.family.map_words(PROMPT)
    assert wm.words == ("a", "red", "apple", ",", "on", "a", "wooden", "table")
    assert wm.sequence_length == 512  # FluxPipeline's max_sequence_length, not the tokenizer's
    assert wm.token_indices[0] == (0,)  # T5 has no start token


def test_maps_equal_the_eager_reference_without_cfg_non_square(flux_engine, collect):
    end, _ = _run(flux_engine, GenerationRequest(PROMPT, seed=3, steps=3, width=96, height=64, guidance=0.0), collect)
    assert collect.start.extra["cfg"] is False and collect.start.map_size == (48, 72)
    assert end.image.shape == (64, 96, 3)


def test_maps_equal_the_eager_reference_with_true_cfg(flux_engine, collect):
    """guidance > 1 on a model without guidance embedding: a second, negative call per step that feeds nothing."""
    _, rec = _run(flux_engine, GenerationRequest(PROMPT, negative_prompt="blurry", seed=4, steps=2, width=64, height=96,
                                                 guidance=4.0), collect)
    assert collect.start.extra["cfg"] is True
    assert rec.boundaries == [4, 8]  # the reference kept the conditional call's four blocks per step


def test_maps_equal_the_eager_reference_with_guidance_distillation(flux_dirs, collect):
    engine = Engine.load(str(flux_dirs["dev"]), device="cpu", progress=False)
    _run(engine, GenerationRequest(PROMPT, seed=5, steps=2, width=64, height=64), collect)
    assert collect.start.guidance == 3.5 and collect.start.extra["cfg"] is False


@pytest.mark.parametrize("layers, kept", [
    (("single",), lambda n: n.startswith("single_")),
    (("transformer_blocks.1",), lambda n: n == "transformer_blocks.1.attn"),  # not single_transformer_blocks.1
])
def test_layer_filter_by_block_kind_and_index(flux_engine, collect, layers, kept):
    _run(flux_engine, GenerationRequest(PROMPT, seed=6, steps=2, width=64, height=64, layers=layers), collect, keep=kept)


def test_fused_projections_give_the_same_maps(flux_dirs, collect):
    engine = Engine.load(str(flux_dirs["schnell"]), device="cpu", progress=False)
    engine.pipe.transformer.fuse_qkv_projections()
    assert all("qkv" in s.taps for s in engine.family.attention_sites())
    _run(engine, GenerationRequest(PROMPT, seed=7, steps=2, width=64, height=64), collect)


def _latents(pipe, **kw):
    with torch.no_grad():
        return pipe(PROMPT, num_inference_steps=3, width=96, height=64, output_type="latent",
                    generator=torch.Generator().manual_seed(1), **kw).images


@pytest.mark.parametrize("kw, cfg", [({}, False), ({"true_cfg_scale": 4.0, "negative_prompt": ""}, True)])
def test_captured_run_is_bit_identical_to_plain(flux_engine, kw, cfg):
    pipe, family = flux_engine.pipe, flux_engine.family
    plain = _latents(pipe, **kw)
    words = family.map_words(PROMPT)
    agg = Aggregator(words.token_indices, words.sequence_length, (8, 12), (8, 12), cfg, "cpu")
    family.begin_run((8, 12))
    with AttentionCapture(family) as cap:
        cap.begin(agg)
        captured = _latents(pipe, **kw)
    assert agg.layer_calls == 4 * 3  # four blocks, three steps; never the negative calls
    assert torch.equal(captured, plain)


def test_engine_image_is_bit_identical_to_the_plain_pipeline(flux_engine, collect):
    req = flux_engine.validate(GenerationRequest(PROMPT, negative_prompt="grey", seed=11, steps=2, width=96, height=64, guidance=3.0))
    end = flux_engine.generate(req, Bus([collect]))
    with torch.inference_mode():
        out = flux_engine.pipe(PROMPT, negative_prompt="grey", true_cfg_scale=3.0, num_inference_steps=2, width=96, height=64,
                               output_type="np", generator=torch.Generator("cpu").manual_seed(11))
    plain = np.clip(np.rint(np.asarray(out.images[0]) * 255), 0, 255).astype(np.uint8)
    assert np.array_equal(end.image, plain)


def test_packed_latents_preview_as_the_pipeline_unpacks_them(flux_engine, collect):
    pipe, family = flux_engine.pipe, flux_engine.family
    family.begin_run((4, 6))
    packed = torch.randn(1, 2 * 3, 16)
    assert torch.equal(family.spatial_latents(packed), pipe._unpack_latents(packed, 32, 48, pipe.vae_scale_factor))
    end = flux_engine.generate(GenerationRequest(PROMPT, seed=1, steps=2, width=96, height=64, vae_every=1), Bus([collect]))
    assert end.status == "completed"
    assert len(flux_engine.previewer.weight) == 4
    for frame in collect.frames:
        assert frame.preview.shape == (64, 96, 3) and frame.preview.dtype == np.uint8 and frame.preview.std() > 0


def test_region_maps_are_the_image_block_of_the_joint_softmax(flux_engine, collect):
    from bridge.regions import from_dict, parse_list

    specs = [{"id": "box", "box": [8, 8, 40, 24]}, {"id": "dot", "pixel": [50, 50]}]
    req = flux_engine.validate(GenerationRequest(PROMPT, negative_prompt="", seed=2, steps=2, guidance=5.0, width=64, height=64,
                                                 regions=parse_list(specs, from_dict)))
    marker = Marker()
    with FluxReference(flux_engine.pipe, PROMPT, (64, 64)) as rec:
        marker.rec = rec
        end = flux_engine.generate(req, Bus([marker, collect]))
    assert end.status == "completed", end.error
    map_hw, start = collect.start.map_size, 0
    h, w = rec.grid
    weights = torch.from_numpy(np.stack([reference_coverage(s, h, w, (64, 64)) for s in specs]))
    for frame, stop in zip(collect.frames, rec.boundaries):
        want = torch.zeros(len(specs), *map_hw, dtype=torch.float64)
        for call in rec.calls[start:stop]:
            layer = (weights @ call["image"].sum(0)).reshape(1, len(specs), h, w)
            want += F.interpolate(layer, size=map_hw, mode="bicubic", align_corners=False)[0].clamp(min=0)
        start = stop
        assert [r["id"] for r in frame.regions] == ["box", "dot"]
        np.testing.assert_allclose(frame.kinds["self"].astype(np.float64), want.numpy(), rtol=2**-10, atol=1e-4)


def test_render_records_a_flux_folder_as_a_user_would(flux_dirs, tmp_path, capsys):
    """`render --model <a Flux folder>`: the same command as for every model, a recording with T5 words."""
    from bridge.cli import main
    from bridge.recording import load_recording

    out = tmp_path / "apple"
    code = main(["render", "--model", str(flux_dirs["schnell"]), "--device", "cpu", "--no-progress", "--prompt", PROMPT,
                 "--steps", "3", "--width", "96", "--height", "64", "--layers", "single", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "completed: 3/3 steps" in printed
    rec = load_recording(out)
    assert rec.start.words == ("a", "red", "apple", ",", "on", "a", "wooden", "table")
    assert rec.manifest["extra"]["layers"] == ["single"] and len(list(rec.frames())) == 3
    assert np.load(out / "daam.npy").shape == (8, 48, 72)
