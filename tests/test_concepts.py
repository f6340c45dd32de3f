"""Concept maps (map kind "concepts"): ConceptAttention on Flux, OVAM on UNets, each equal to an
eager reference written here, with the image bit-identical to a plain run.

ConceptAttention reference: hooks each dual-stream block's inputs (hidden states, text states,
temb, rotary embedding) during a plain run and redoes the block by hand in float64 with the
block's weights: the image and text streams' joint attention (softmax(q·kᵀ/√d)·v over [text;
image], rotation written out), the concept stream (each concept's first T5 token through the
context embedder; per block the text-stream modulation, the concept queries over [concept;
image] keys, the text stream's residual update), the saliency softmax over concepts of
image output · concept output, averaged over the later half of the blocks.
OVAM reference: every cross-attention's image queries (recorded by to_q hooks) against keys
of the attribution prompt made by the layer's own to_k, softmax in float64, DAAM's aggregation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _pipelines import make_flux_like
from _qk_reference import QKRecorder
from bridge.bus import Bus
from bridge.engine import Engine, GenerationRequest
from bridge.errors import InvalidRequest
from test_capture_flux import rotate

PROMPT = "a red apple, on a wooden table"
CONCEPTS = ("apple", "table", "background")


@pytest.fixture(scope="module")
def flux_engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("flux-concepts")
    return Engine.load(str(make_flux_like(root, num_layers=4)), device="cpu", progress=False)


class ConceptReference:
    """Records each dual-stream (Flux) or joint (SD3) block's inputs on conditional passes;
    computes the maps by hand.  Flux: [text; image], rotated, true CFG as a second call (a call
    is conditional when its text states are the prompt's); SD3: [image; text], no rotation, CFG
    as the batch's second half."""

    def __init__(self, pipe, prompt: str, concepts, layers):
        self.pipe, self.transformer = pipe, pipe.transformer
        self.sd3 = type(pipe).__name__ == "StableDiffusion3Pipeline"
        with torch.no_grad():
            if self.sd3:
                self.prompt_text = None
                tok = pipe.tokenizer_3(list(concepts), padding="max_length", max_length=256, truncation=True, return_tensors="pt")
                self.concept_t5 = pipe.text_encoder_3(tok.input_ids)[0][:, 0].double()
            else:
                self.prompt_text = pipe.encode_prompt(prompt, prompt_2=None)[0]
                tok = pipe.tokenizer_2(list(concepts), padding="max_length", max_length=512, truncation=True, return_tensors="pt")
                self.concept_t5 = pipe.text_encoder_2(tok.input_ids)[0][:, 0].double()  # each concept's first token
        self.layers = layers
        self.steps, self._blocks, self._hooks, self._conditional = [], [], [], True

    def __enter__(self):
        def outer(module, args, kwargs):
            text = kwargs["encoder_hidden_states"]
            if self.sd3:  # CFG in the batch: keep the second half; a skip-layer pass has the half only
                self._conditional = not kwargs.get("skip_layers")
            else:
                self._conditional = torch.equal(text, self.prompt_text)
            if self._conditional:
                self._blocks = []
                self.steps.append(self._blocks)

        self._hooks.append(self.transformer.register_forward_pre_hook(outer, with_kwargs=True))
        for block in self.transformer.transformer_blocks:
            def hook(module, args, kwargs):
                if self._conditional:
                    self._blocks.append({k: kwargs.get(k) for k in ("hidden_states", "encoder_hidden_states", "temb", "image_rotary_emb")})
            self._hooks.append(block.register_forward_pre_hook(hook, with_kwargs=True))
        return self

    def __exit__(self, *exc):
        for h in self._hooks:
            h.remove()

    @staticmethod
    def attend(q, k, v):
        """(B, S, H, d) each → softmax(q·kᵀ/√d)·v, heads flattened: (B, S, H·d), float64."""
        q, k, v = (x.double().transpose(1, 2) for x in (q, k, v))
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        return (weights @ v).transpose(1, 2).flatten(2)

    def step_maps(self, grid, map_hw):
        out = []
        for blocks in self.steps:
            with torch.no_grad():
                c = self.transformer.context_embedder(self.concept_t5.float()).double().unsqueeze(0)
                per_layer = []
                for index, (block, seen) in enumerate(zip(self.transformer.transformer_blocks, blocks)):
                    c, saliency = self.block(block, seen, c)
                    if index in self.layers:
                        per_layer.append(saliency)
            mean = torch.stack(per_layer).mean(0).reshape(1, -1, *grid)
            out.append(F.interpolate(mean, size=map_hw, mode="bicubic", align_corners=False)[0].clamp(min=0).numpy())
        return out

    def block(self, block, seen, c):
        attn = block.attn
        d = attn.to_k.out_features // attn.heads

        def split(x, norm=None):
            x = x.unflatten(-1, (-1, d))
            return x if norm is None else norm(x)

        x, text, temb = seen["hidden_states"], seen["encoder_hidden_states"], seen["temb"]
        if self.sd3:  # the conditional half of the CFG batch
            half = x.shape[0] // 2
            x, text, temb = x[half:], text[half:], temb[half:]
        last = getattr(block, "context_pre_only", False)
        nx = block.norm1(x, emb=temb)[0]
        nt = block.norm1_context(text, temb) if last else block.norm1_context(text, emb=temb)[0]
        image_q, image_k, image_v = split(attn.to_q(nx), attn.norm_q), split(attn.to_k(nx), attn.norm_k), split(attn.to_v(nx))
        text_q = split(attn.add_q_proj(nt), attn.norm_added_q)
        text_k, text_v = split(attn.add_k_proj(nt), attn.norm_added_k), split(attn.add_v_proj(nt))
        image_q, image_k, image_v, text_q, text_k, text_v = (y.double() for y in (image_q, image_k, image_v, text_q, text_k, text_v))
        if seen["image_rotary_emb"] is not None:  # Flux: the rotation of [text; image]
            cos, sin = (r.double() for r in seen["image_rotary_emb"])
            t = text.shape[1]
            text_q, text_k = rotate(text_q, cos[:t], sin[:t]), rotate(text_k, cos[:t], sin[:t])
            image_q, image_k = rotate(image_q, cos[t:], sin[t:]), rotate(image_k, cos[t:], sin[t:])
        o_x = self.attend(image_q, torch.cat([image_k, text_k], 1), torch.cat([image_v, text_v], 1))  # the image tokens' output
        # the concept stream, with the text stream's weights; its positions are 0 (no rotation)
        if last:
            nc = block.norm1_context(c.float(), temb).double()
        else:
            nc, gate_msa, shift_mlp, scale_mlp, gate_mlp = (y.double() for y in block.norm1_context(c.float(), emb=temb))
        cq = split(attn.add_q_proj(nc.float()), attn.norm_added_q).double()
        ck = split(attn.add_k_proj(nc.float()), attn.norm_added_k).double()
        cv = split(attn.add_v_proj(nc.float())).double()
        o_c = self.attend(cq, torch.cat([ck, image_k], 1), torch.cat([cv, image_v], 1))
        saliency = torch.softmax(o_x @ o_c.transpose(-1, -2), dim=-1).sum(0).T  # (concepts, N)
        if last:
            return c, saliency
        c = c + gate_msa.unsqueeze(1) * attn.to_add_out(o_c.float()).double()
        normed = block.norm2_context(c.float()).double() * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        c = c + gate_mlp.unsqueeze(1) * block.ff_context(normed.float()).double()
        return c, saliency


def _concept_run(engine, req, collect, layers=(2, 3)):
    req = engine.validate(req)
    with ConceptReference(engine.pipe, req.prompt, req.concepts, layers) as ref:
        end = engine.generate(req, Bus([collect]))
    assert end.status == "completed", end.error
    return end, ref


@pytest.mark.parametrize("guidance, negative", [(0.0, ""), (4.0, "blurry")])
def test_concept_attention_equals_the_eager_reference(flux_engine, collect, guidance, negative):
    req = GenerationRequest(PROMPT, negative_prompt=negative, seed=3, steps=3, width=96, height=64, guidance=guidance,
                            concepts=CONCEPTS)
    _, ref = _concept_run(flux_engine, req, collect)
    want = ref.step_maps((4, 6), collect.start.map_size)
    assert len(want) == len(collect.frames) == 3  # one conditional pass per step, also with true CFG
    for frame, maps in zip(collect.frames, want):
        assert frame.concepts == CONCEPTS and frame.kinds["concepts"].shape == (3, 48, 72)
        np.testing.assert_allclose(frame.kinds["concepts"].astype(np.float64), maps, rtol=2**-9, atol=2e-3)
        assert np.allclose(frame.kinds["concepts"].astype(np.float32).sum(0), 1, atol=0.05)  # a softmax over concepts
    assert collect.start.extra["concepts"] == list(CONCEPTS)


def test_chosen_concept_layers(flux_engine, collect):
    req = GenerationRequest(PROMPT, seed=4, steps=2, width=64, height=64, concepts=CONCEPTS[:2], concept_layers=(0,))
    _, ref = _concept_run(flux_engine, req, collect, layers=(0,))
    for frame, maps in zip(collect.frames, ref.step_maps((4, 4), collect.start.map_size)):
        np.testing.assert_allclose(frame.kinds["concepts"].astype(np.float64), maps, rtol=2**-9, atol=2e-3)
    with pytest.raises(InvalidRequest, match="dual-stream block indices 0..3"):
        flux_engine.validate(GenerationRequest(PROMPT, width=64, height=64, concepts=("x",), concept_layers=(4,)))


@pytest.mark.parametrize("guidance", [0.0, 4.0])
def test_concepts_leave_the_image_bit_identical(flux_engine, collect, guidance):
    req = GenerationRequest(PROMPT, negative_prompt="grey", seed=5, steps=2, width=96, height=64, guidance=guidance,
                            concepts=CONCEPTS)
    end = flux_engine.generate(req, Bus([collect]))
    kw = {"true_cfg_scale": guidance, "negative_prompt": "grey"} if guidance > 1 else {}
    with torch.inference_mode():
        out = flux_engine.pipe(PROMPT, num_inference_steps=2, width=96, height=64, output_type="np",
                               generator=torch.Generator("cpu").manual_seed(5), **kw)
    plain = np.clip(np.rint(np.asarray(out.images[0]) * 255), 0, 255).astype(np.uint8)
    assert np.array_equal(end.image, plain)


def test_concepts_changed_mid_run_apply_from_the_next_step(flux_engine, collect):
    """A control that lands while step 1 runs (here: from inside its transformer call) shows from step 2 on."""
    asked, calls = {"now": ("apple",)}, []

    def during_step(_module, _args):
        calls.append(1)
        if len(calls) == 2:  # step 1's transformer call
            asked["now"] = ("sky", "apple", "ground")

    hook = flux_engine.pipe.transformer.register_forward_pre_hook(during_step)
    try:
        end = flux_engine.generate(GenerationRequest(PROMPT, seed=6, steps=4, width=64, height=64), Bus([collect]),
                                   concepts=lambda: asked["now"])
    finally:
        hook.remove()
    assert end.status == "completed"
    new = ("sky", "apple", "ground")
    assert [f.concepts for f in collect.frames] == [("apple",), ("apple",), new, new]
    assert [f.kinds["concepts"].shape[0] for f in collect.frames] == [1, 1, 3, 3]
    asked["now"] = ()
    c2 = type(collect)()
    flux_engine.generate(GenerationRequest(PROMPT, seed=6, steps=1, width=64, height=64), Bus([c2]), concepts=lambda: asked["now"])
    assert "concepts" not in c2.frames[0].kinds and c2.frames[0].concepts == ()


def test_ovam_concepts_on_a_unet_equal_the_eager_reference(tiny_engine, collect):
    """UNet concept maps: the attribution prompt's keys through each layer's own to_k, against the run's queries."""
    pipe, concepts = tiny_engine.pipe, ("apple", "wooden table")
    req = tiny_engine.validate(GenerationRequest(PROMPT, seed=2, steps=3, concepts=concepts))

    class Marker:
        def on_step(self, frame):
            rec.mark_step()

    with QKRecorder(pipe.unet) as rec:
        end = tiny_engine.generate(req, Bus([Marker(), collect]))
    assert end.status == "completed"
    tok = pipe.tokenizer
    ids = tok("apple wooden table", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        states = pipe.text_encoder(ids)[0]
    n_apple = len(tok("apple", add_special_tokens=False).input_ids)
    n_table = len(tok("wooden table", add_special_tokens=False).input_ids)
    positions = (tuple(range(1, 1 + n_apple)), tuple(range(1 + n_apple, 1 + n_apple + n_table)))
    for call in rec.calls:  # the attribution prompt's keys replace the text's
        module = pipe.unet.get_submodule(call["name"])
        with torch.no_grad():
            call["k"] = module.to_k(states).double().expand(call["q"].shape[0], -1, -1)
    want = rec.reference(positions, tiny_engine.uses_cfg(req.guidance), collect.start.map_size)
    for frame, (maps, _) in zip(collect.frames, want):
        assert frame.concepts == concepts
        np.testing.assert_allclose(frame.kinds["concepts"].astype(np.float64), maps, rtol=2**-10, atol=1e-4)
        assert frame.kinds["concepts"].max() > 0
    with torch.inference_mode():
        out = pipe(PROMPT, num_inference_steps=3, guidance_scale=req.guidance, width=req.width, height=req.height,
                   output_type="np", generator=torch.Generator("cpu").manual_seed(2))
    assert np.array_equal(end.image, np.clip(np.rint(np.asarray(out.images[0]) * 255), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("concepts, message", [
    (tuple(f"c{i}" for i in range(17)), "at most 16 concepts"),
    (("x" * 41,), "at most 40 characters"),
    (("sky", "sky"), "each concept once"),
    ((3,), "list of words"),
])
def test_bad_concepts_are_refused_in_one_sentence(tiny_engine, concepts, message):
    with pytest.raises(InvalidRequest, match=message):
        tiny_engine.validate(GenerationRequest(PROMPT, concepts=concepts))


@pytest.mark.parametrize("qk_norm", [None, "rms_norm"])
def test_concept_attention_on_sd3_equals_the_eager_reference(tmp_path, collect, qk_norm):
    """SD3's joint blocks: [image; text], CFG in the batch, the last block context_pre_only."""
    from _pipelines import make_sd3_like

    engine = Engine.load(str(make_sd3_like(tmp_path, qk_norm=qk_norm, num_layers=3)), device="cpu", progress=False)
    assert engine.pipe.transformer.transformer_blocks[-1].context_pre_only
    req = GenerationRequest(PROMPT, seed=3, steps=2, width=96, height=64, concepts=CONCEPTS, concept_layers=(1, 2))
    end, ref = _concept_run(engine, req, collect, layers=(1, 2))
    want = ref.step_maps((4, 6), collect.start.map_size)
    assert len(want) == len(collect.frames) == 2
    for frame, maps in zip(collect.frames, want):
        np.testing.assert_allclose(frame.kinds["concepts"].astype(np.float64), maps, rtol=2**-9, atol=2e-3)
    with torch.inference_mode():
        out = engine.pipe(PROMPT, num_inference_steps=2, guidance_scale=req.guidance or 7.0, width=96, height=64,
                          output_type="np", generator=torch.Generator("cpu").manual_seed(3))
    assert np.array_equal(end.image, np.clip(np.rint(np.asarray(out.images[0]) * 255), 0, 255).astype(np.uint8))
    with pytest.raises(InvalidRequest, match="joint block indices 0..2"):
        engine.validate(GenerationRequest(PROMPT, width=64, height=64, concepts=("x",), concept_layers=(3,)))


def test_concept_encodings_are_cached_per_name(flux_engine, collect, monkeypatch):
    """A playlist sets the same concepts run after run: only names never seen are encoded."""
    pipe, encoded = flux_engine.pipe, []
    original = pipe._get_t5_prompt_embeds

    def counting(prompt=None, **kw):
        encoded.append(list(prompt))
        return original(prompt=prompt, **kw)

    monkeypatch.setattr(pipe, "_get_t5_prompt_embeds", counting)
    flux_engine.family.__dict__.pop("_concept_cache", None)
    req = GenerationRequest(PROMPT, seed=1, steps=1, width=64, height=64, concepts=("moon", "sea"))
    flux_engine.generate(req, Bus([collect]))
    flux_engine.generate(req, Bus([collect]))
    flux_engine.generate(GenerationRequest(PROMPT, seed=1, steps=1, width=64, height=64, concepts=("sea", "moon", "sky")),
                         Bus([collect]))
    concept_calls = [p for p in encoded if p != [PROMPT]]
    assert concept_calls == [["moon", "sea"], ["sky"]]
