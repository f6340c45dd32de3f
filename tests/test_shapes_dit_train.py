"""builtin:shapes-dit's training script: the caption vocabulary and its piece owners, the grounded
attention against Flux's own processor, packing as FluxPipeline packs, and a tiny end-to-end run
that writes a FluxPipeline folder the engine loads like FLUX.1 (its folder defaults included)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bridge.builtin import shapes_data as sd
from bridge.builtin.training import dit


@pytest.fixture(scope="module")
def t5_tokenizer(tmp_path_factory):
    from transformers import T5Tokenizer

    return T5Tokenizer.from_pretrained(dit.write_caption_tokenizer(tmp_path_factory.mktemp("t5")))


def test_every_caption_word_is_one_piece_and_objects_own_their_colour_and_shape(t5_tokenizer):
    enc = dit.T5CaptionEncoder(t5_tokenizer)
    for scene in sd.sample_scenes(4, 200):
        ids, owner = enc.encode(scene)
        assert len(ids) == dit.TEXT_POSITIONS
        pieces = t5_tokenizer.convert_ids_to_tokens([i for i in ids if i not in (0, 1)])
        assert [p.lstrip("▁") for p in pieces] == [w for w, _ in scene.pieces]  # whole words, punctuation apart
        for j, obj in enumerate(scene.objects):
            owned = t5_tokenizer.convert_ids_to_tokens([i for i, o in zip(ids, owner) if o == j])
            assert owned == [f"▁{obj.colour}", f"▁{obj.shape}"]
    assert enc.empty()[0] == t5_tokenizer.eos_token_id


def test_nouns_only_share_recaptions_the_same_scenes(t5_tokenizer):
    """--nouns-only: a share of the scenes keep their images but are captioned by shape nouns,
    each noun owned by its object; the scenes drawn are the recipe's either way."""
    from argparse import Namespace

    from bridge.builtin import train_shapes_dit as tsd

    vae, clip_tok, clip = tsd.load_reused("cpu")
    enc = dit.T5CaptionEncoder(t5_tokenizer)
    plain = tsd.encode_data(Namespace(seed=0, nouns_only=0.0), vae, clip_tok, clip, enc, "cpu", 48)
    bare = tsd.encode_data(Namespace(seed=0, nouns_only=0.5), vae, clip_tok, clip, enc, "cpu", 48)
    assert torch.equal(plain["z"], bare["z"]) and torch.equal(plain["masks"], bare["masks"])
    changed = (plain["ids"] != bare["ids"]).any(1)
    assert 10 <= int(changed.sum()) <= 38
    for row in changed.nonzero()[:, 0].tolist():
        words = [p.lstrip("▁") for p in t5_tokenizer.convert_ids_to_tokens(bare["ids"][row]) if p not in ("<pad>", "</s>")]
        owned = {w for w, o in zip(words, bare["owner"][row].tolist()) if o >= 0}
        assert owned <= set(sd.SHAPES) and not set(words) & set(sd.COLOURS)
        assert not torch.equal(plain["pooled"][row], bare["pooled"][row])  # CLIP's pooled vector follows the caption


def test_grounded_attention_is_fluxs_attention_and_keeps_the_image_over_text_block():
    """Same outputs as diffusers' FluxAttnProcessor for dual- and single-stream blocks; what it
    keeps is each image query's softmax over the text keys, heads averaged."""
    torch.manual_seed(0)
    model = dit.make_transformer(1, 1, 16).eval()
    kwargs = dict(hidden_states=torch.randn(2, 16, 16), timestep=torch.tensor([0.3, 0.7]), pooled_projections=torch.randn(2, 16),
                  encoder_hidden_states=torch.randn(2, dit.TEXT_POSITIONS, dit.WIDTH), txt_ids=torch.zeros(dit.TEXT_POSITIONS, 3),
                  img_ids=dit.image_ids(4, 4, "cpu"), return_dict=False)
    with torch.no_grad():
        plain = model(**kwargs)[0]
        store: list = []
        model.set_attn_processor(dit.grounded_processors(model, store, dit.TEXT_POSITIONS))
        grounded = model(**kwargs)[0]
    assert torch.allclose(plain, grounded, atol=1e-5)
    assert len(store) == 2 and all(p.shape == (2, 16, dit.TEXT_POSITIONS) for p in store)
    assert torch.allclose(store[0].sum(-1), torch.ones(2, 16), atol=1e-5)


def test_packing_is_fluxpipelines():
    from diffusers import FluxPipeline

    z = torch.randn(3, 4, 16, 16)
    assert torch.equal(dit.pack(z), FluxPipeline._pack_latents(z, 3, 4, 16, 16))


def test_tiny_training_run_writes_a_flux_folder_the_engine_loads(tmp_path, collect):
    from bridge.builtin import train_shapes_dit as tsd
    from bridge.bus import Bus
    from bridge.engine import Engine, GenerationRequest

    out = tmp_path / "shapes-dit"
    assert tsd.main(["--steps", "3", "--scenes", "64", "--batch", "8", "--out", str(out), "--no-progress", "--log-every", "1"]) == 0
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "FluxPipeline"
    defaults = json.loads((out / "bridge_defaults.json").read_text())
    assert defaults == {"guidance": 3.0, "vae_every": 1, "max_sequence_length": dit.TEXT_POSITIONS, "size": 64}
    assert json.loads((out / "training.json").read_text())["args"]["steps"] == 3
    engine = Engine.load(str(out), device="cpu", progress=False)
    assert engine.loaded.family == "flux" and engine.native_size == (64, 64) and engine.family.max_sequence_length == 24
    end = engine.generate(GenerationRequest("a yellow star and a green circle", steps=3, concepts=("star", "background")),
                          Bus([collect]))
    assert end.status == "completed" and end.image.shape == (64, 64, 3)
    assert collect.start.words == ("a", "yellow", "star", "and", "a", "green", "circle")
    assert collect.frames[-1].maps.shape == (7, 64, 64) and collect.frames[-1].kinds["concepts"].shape == (2, 64, 64)
    assert np.isfinite(collect.frames[-1].maps.astype(np.float32)).all()
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    assert size < 15e6
