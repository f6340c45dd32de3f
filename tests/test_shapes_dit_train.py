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


@pytest.fixture(scope="module")
def eight_scenes(t5_tokenizer):
    """Eight of the recipe's scenes encoded as training reads them (each concept set's T5 ids
    included), and the width of CLIP's pooled vector."""
    from bridge.builtin import train_shapes_dit as tsd

    vae, clip_tok, clip = tsd.load_reused("cpu")
    data = tsd.encode_data(tsd.parse_args(["--no-progress"]), vae, clip_tok, clip, dit.T5CaptionEncoder(t5_tokenizer), "cpu", 8)
    data["concept_ids"] = tsd.concept_set_ids(t5_tokenizer, "cpu")
    return data, clip.config.hidden_size


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


def _tiny_forward_inputs() -> dict:
    """Random inputs for a 4 × 4-token transformer from make_transformer(…, 16): two images, two timesteps."""
    return dict(hidden_states=torch.randn(2, 16, 16), timestep=torch.tensor([0.3, 0.7]), pooled_projections=torch.randn(2, 16),
                encoder_hidden_states=torch.randn(2, dit.TEXT_POSITIONS, dit.WIDTH), txt_ids=torch.zeros(dit.TEXT_POSITIONS, 3),
                img_ids=dit.image_ids(4, 4, "cpu"), return_dict=False)


def test_grounded_attention_is_fluxs_attention_and_keeps_the_image_over_text_block():
    """Same outputs as diffusers' FluxAttnProcessor for dual- and single-stream blocks; what it
    keeps is each image query's softmax over the text keys, heads averaged."""
    torch.manual_seed(0)
    model = dit.make_transformer(1, 1, 16).eval()
    kwargs = _tiny_forward_inputs()
    with torch.no_grad():
        plain = model(**kwargs)[0]
        store: list = []
        model.set_attn_processor(dit.grounded_processors(model, store, dit.TEXT_POSITIONS))
        grounded = model(**kwargs)[0]
    assert torch.allclose(plain, grounded, atol=1e-5)
    assert len(store) == 2 and all(p.shape == (2, 16, dit.TEXT_POSITIONS) for p in store)
    assert torch.allclose(store[0].sum(-1), torch.ones(2, 16), atol=1e-5)


def test_text_grounding_keeps_each_caption_tokens_attention_over_the_image_in_dual_blocks_only():
    """--text-ground-weight reads the other direction of the joint attention: the text queries
    over the image keys, softmax over the image alone — checked against the attention
    recomputed from the dual block's own projections; the outputs stay Flux's."""
    from diffusers.models.embeddings import apply_rotary_emb

    torch.manual_seed(1)
    model = dit.make_transformer(1, 1, 16).eval()
    kwargs = _tiny_forward_inputs()
    seen = {}
    attn = model.transformer_blocks[0].attn
    hook = attn.register_forward_pre_hook(lambda _m, _a, kw: seen.update(kw), with_kwargs=True)
    with torch.no_grad():
        plain = model(**kwargs)[0]
        store, text_store = [], []
        model.set_attn_processor(dit.grounded_processors(model, store, dit.TEXT_POSITIONS, text_store))
        grounded = model(**kwargs)[0]
    hook.remove()
    assert torch.allclose(plain, grounded, atol=1e-5)
    assert len(store) == 2 and len(text_store) == 1  # both blocks read image → text; only the dual one text → image
    kept = text_store[0]
    assert kept.shape == (2, 16, dit.TEXT_POSITIONS)
    assert torch.allclose(kept.sum(1), torch.ones(2, dit.TEXT_POSITIONS), atol=1e-5)  # a distribution over the image
    with torch.no_grad():
        d = attn.head_dim
        x, c = seen["hidden_states"], seen["encoder_hidden_states"]
        q = torch.cat([attn.norm_added_q(attn.add_q_proj(c).unflatten(-1, (-1, d))), attn.norm_q(attn.to_q(x).unflatten(-1, (-1, d)))], 1)
        k = torch.cat([attn.norm_added_k(attn.add_k_proj(c).unflatten(-1, (-1, d))), attn.norm_k(attn.to_k(x).unflatten(-1, (-1, d)))], 1)
        q, k = (apply_rotary_emb(t, seen["image_rotary_emb"], sequence_dim=1).transpose(1, 2) for t in (q, k))
        t = dit.TEXT_POSITIONS
        want = torch.softmax(q[:, :, :t] @ k[:, :, t:].transpose(-1, -2) / d ** 0.5, dim=-1).mean(1)  # (B, T, N)
    assert torch.allclose(kept, want.transpose(1, 2), atol=1e-5)


def test_packing_is_fluxpipelines():
    from diffusers import FluxPipeline

    z = torch.randn(3, 4, 16, 16)
    assert torch.equal(dit.pack(z), FluxPipeline._pack_latents(z, 3, 4, 16, 16))


def test_tiny_training_run_writes_a_flux_folder_the_engine_loads(tmp_path, collect):
    from bridge.builtin import train_shapes_dit as tsd
    from bridge.bus import Bus
    from bridge.engine import Engine, GenerationRequest

    out = tmp_path / "shapes-dit"
    assert tsd.main(["--steps", "3", "--scenes", "64", "--batch", "8", "--out", str(out), "--no-progress", "--log-every", "1",
                     "--text-ground-weight", "0.2"]) == 0
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "FluxPipeline"
    defaults = json.loads((out / "bridge_defaults.json").read_text())
    assert defaults == {"guidance": 3.0, "vae_every": 1, "max_sequence_length": dit.TEXT_POSITIONS, "size": 64}
    recipe = json.loads((out / "training.json").read_text())["args"]
    assert recipe["steps"] == 3 and recipe["text_ground_weight"] == 0.2
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


def test_fine_tune_starts_from_a_folder_and_keeps_its_vocabulary(tmp_path):
    """--init starts the transformer and T5 from a saved folder (a step moves them away from it),
    keeps the folder's T5 vocabulary byte for byte and its training record under init_training."""
    from safetensors.torch import load_file

    from bridge.builtin import train_shapes_dit as tsd

    common = ["--steps", "1", "--scenes", "16", "--batch", "4", "--no-progress", "--precision", "fp32", "--lr", "0.05"]
    base, tuned = tmp_path / "base", tmp_path / "tuned"
    assert tsd.main(["--out", str(base), "--dual", "1", "--single", "1", *common]) == 0
    assert tsd.main(["--out", str(tuned), "--init", str(base), "--text-ground-weight", "0.5", *common]) == 0
    for part in ("tokenizer_2/tokenizer.json", "tokenizer_2/tokenizer_config.json"):
        assert (tuned / part).read_bytes() == (base / part).read_bytes()  # its vocabulary, not the recipe's
    config = json.loads((tuned / "transformer" / "config.json").read_text())
    assert (config["num_layers"], config["num_single_layers"]) == (1, 1)  # the folder's blocks, not --dual/--single's 3
    meta = json.loads((tuned / "training.json").read_text())
    assert meta["args"]["init"] == str(base) and meta["init_training"]["args"]["dual"] == 1
    weights = [load_file(str(f / "transformer" / "diffusion_pytorch_model.safetensors")) for f in (base, tuned)]
    q = "transformer_blocks.0.attn.add_q_proj.weight"
    assert not torch.equal(weights[0][q], weights[1][q])


def test_init_that_is_not_a_flux_pipeline_folder_is_a_usage_error(tmp_path, capsys):
    from bridge.builtin import train_shapes_dit as tsd
    from bridge.models.resolve import BUILTIN_DIR

    for folder, missing in ((tmp_path, "no transformer, text_encoder_2, tokenizer_2"),
                            (BUILTIN_DIR / "shapes", "no transformer, text_encoder_2, tokenizer_2")):
        with pytest.raises(SystemExit) as e:
            tsd.parse_args(["--init", str(folder)])
        assert e.value.code == 2
        assert f"not a FluxPipeline folder like the shipped one ({missing})" in capsys.readouterr().err


def test_text_grounding_term_moves_the_text_streams_query_weights(t5_tokenizer, eight_scenes):
    """One training step with and without --text-ground-weight, same seed, same data: the term
    is in the loss, so it reaches the dual-stream block's text-query projection."""
    from bridge.builtin import train_shapes_dit as tsd

    data, pooled_width = eight_scenes
    weights = {}
    for weight in (0.0, 5.0):
        torch.manual_seed(0)
        t5, transformer = dit.make_t5(len(t5_tokenizer)), dit.make_transformer(1, 1, pooled_width)
        args = tsd.parse_args(["--steps", "1", "--batch", "8", "--no-progress", "--ema", "0", "--text-ground-weight", str(weight)])
        args.bf16 = False
        tsd.train(args, data, t5, transformer, "cpu")
        attn = transformer.transformer_blocks[0].attn
        weights[weight] = attn.add_q_proj.weight.detach().clone()
    assert not torch.allclose(weights[0.0], weights[5.0])


def test_training_concept_stream_gives_the_captures_concept_maps():
    """--concept-weight trains the maps the capture streams: the training hooks (under the
    grounded processors training installs) give, block for block, the saliency the engine's
    ConceptAttention producer (itself checked against an eager reference in test_concepts.py)
    maps at a step — same blocks averaged, same concept stream, same embedding path."""
    from types import SimpleNamespace

    from bridge.families.joint_concepts import JointConceptAttention

    torch.manual_seed(2)
    model = dit.make_transformer(3, 1, 16).eval()
    kwargs = _tiny_forward_inputs()
    embeds = torch.randn(3, dit.WIDTH)  # three concepts' T5 states
    family = SimpleNamespace(transformer=model, token_patch=1, cfg_in_batch=False, conditional_rows=lambda b, cfg: slice(0, b),
                             concept_embeddings=lambda names: embeds)
    with torch.no_grad(), JointConceptAttention(family, (4, 4), (4, 4), False, "cpu") as capture:
        capture.set_concepts(("a", "b", "c"))
        capture.start_step()
        plain = model(**kwargs)[0]
        streamed = capture.end_step()  # (concepts, 4, 4), the two images summed
    assert capture.layers == (1, 2)
    store: list = []
    model.set_attn_processor(dit.grounded_processors(model, store, dit.TEXT_POSITIONS))
    stream = dit.ConceptStream(model, capture.layers)
    with torch.no_grad():
        stream.begin(embeds)
        trained = model(**kwargs)[0]
        saliency = stream.end()
    stream.remove()
    assert torch.allclose(plain, trained, atol=1e-5)  # the concepts change nothing the image sees
    assert len(saliency) == 2 and saliency[0].shape == (2, 16, 3)
    mean = torch.stack(saliency).mean(0).sum(0).T.reshape(3, 4, 4)
    torch.testing.assert_close(mean, streamed, rtol=1e-4, atol=1e-5)


def test_concept_loss_is_cross_entropy_against_the_scenes_segmentation():
    """concept_loss against a per-token loop: each token's target is its coverage by each
    object under that object's concept, the rest background (last), normalised; the saliency
    averaged over blocks; the kept images only."""
    from bridge.builtin.training.grounding import concept_loss

    torch.manual_seed(3)
    b, k, side, c = 3, 3, 4, 4
    saliency = [torch.softmax(torch.randn(b, side * side, c), -1) for _ in range(2)]
    masks = (torch.rand(b, k, 8, 8) > 0.7).float() * torch.tensor([1.0, 1.0, 0.0]).view(1, k, 1, 1)  # object 2: no mask
    masks[0, 1] = 0.0
    concept_index = torch.tensor([[2, 0, -1], [1, 2, -1], [0, 1, -1]])
    keep = torch.tensor([True, False, True])
    pooled = torch.nn.functional.adaptive_avg_pool2d(masks, side).flatten(2)
    mean = (saliency[0] + saliency[1]) / 2
    want = []
    for i in range(b):
        if not keep[i]:
            continue
        total = 0.0
        for n in range(side * side):
            target = [0.0] * c
            for j in range(k):
                if concept_index[i, j] >= 0:
                    target[concept_index[i, j]] += float(pooled[i, j, n])
            target[-1] = max(0.0, 1 - sum(target[:-1]))
            norm = sum(target)
            total += -sum(t / norm * float(torch.log(mean[i, n, ci])) for ci, t in enumerate(target))
        want.append(total / (side * side))
    got = concept_loss(saliency, masks, concept_index, c, keep=keep)
    assert abs(float(got) - sum(want) / len(want)) < 1e-5


def test_concept_term_trains_the_concept_stream_and_t5(t5_tokenizer, eight_scenes):
    """One training step with and without --concept-weight, same seed, same data: the term
    reaches the later dual-stream block's text-stream weights (which the concept stream uses)
    and T5 (which embeds each concept alone)."""
    from bridge.builtin import train_shapes_dit as tsd

    data, pooled_width = eight_scenes
    assert data["shapes"].shape == (8, sd.MAX_OBJECTS) and int(data["shapes"].max()) < len(sd.SHAPES)
    weights = {}
    for weight in (0.0, 5.0):
        torch.manual_seed(0)
        t5, transformer = dit.make_t5(len(t5_tokenizer)), dit.make_transformer(2, 1, pooled_width)
        args = tsd.parse_args(["--steps", "1", "--batch", "8", "--no-progress", "--ema", "0", "--drop-caption", "0",
                               "--concept-weight", str(weight)])
        args.bf16 = False
        tsd.train(args, data, t5, transformer, "cpu")
        weights[weight] = (transformer.transformer_blocks[1].attn.add_q_proj.weight.detach().clone(),
                           t5.shared.weight.detach().clone())
        assert not [h for b in transformer.transformer_blocks for h in b._forward_hooks.values()]  # hooks removed
    assert not torch.allclose(weights[0.0][0], weights[5.0][0])
    background = t5_tokenizer("background").input_ids[0]
    assert not torch.allclose(weights[0.0][1][background], weights[5.0][1][background])


def test_concept_sets_are_taken_in_turn_and_an_unknown_one_is_a_usage_error(t5_tokenizer, eight_scenes, capsys):
    """--concept-sets colours trains the colour concepts (each object under its colour, the same
    objects as under its shape): one step with it differs from one with the shapes, and with
    "shapes,colours" the second step takes the colours; a set that does not exist is refused in
    one sentence naming the choices."""
    from bridge.builtin import train_shapes_dit as tsd

    with pytest.raises(SystemExit) as e:
        tsd.parse_args(["--concept-sets", "shapes,moods"])
    assert e.value.code == 2 and "--concept-sets: moods; choose from shapes, colours" in capsys.readouterr().err
    assert tsd.parse_args(["--concept-sets", "shapes, colours"]).concept_sets == ("shapes", "colours")
    data, pooled_width = eight_scenes
    assert torch.equal(data["colours"] < 0, data["shapes"] < 0)
    assert int(data["colours"].max()) < len(sd.COLOURS) and data["concept_ids"]["colours"].shape[0] == len(sd.COLOURS) + 1
    weights = {}
    for sets, steps in (("shapes", 1), ("colours", 1), ("shapes", 2), ("shapes,colours", 2)):
        torch.manual_seed(0)
        t5, transformer = dit.make_t5(len(t5_tokenizer)), dit.make_transformer(2, 1, pooled_width)
        args = tsd.parse_args(["--steps", str(steps), "--batch", "4", "--no-progress", "--ema", "0", "--drop-caption", "0",
                               "--concept-weight", "5", "--concept-sets", sets])
        args.bf16 = False
        tsd.train(args, data, t5, transformer, "cpu")
        weights[sets, steps] = transformer.transformer_blocks[1].attn.add_q_proj.weight.detach().clone()
    assert not torch.allclose(weights["shapes", 1], weights["colours", 1])
    assert not torch.allclose(weights["shapes", 2], weights["shapes,colours", 2])  # the second step took the colours
