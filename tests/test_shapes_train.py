"""The training script: caption encoding, the grounding term, and a tiny end-to-end run that writes
a standard pipeline folder the engine loads like any model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bridge.tokenizers import clip_bpe
from bridge.builtin import shapes_data as sd
from bridge.builtin import train_shapes as ts
from bridge.builtin.training import architectures as arch
from bridge.builtin.training import captions, dataset, grounding


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import CLIPTokenizer

    folder = clip_bpe.write_clip_tokenizer(tmp_path_factory.mktemp("tok"), arch.MERGES)
    return CLIPTokenizer.from_pretrained(folder)


def test_wordwise_encoding_equals_whole_caption_tokenization(tokenizer):
    enc = captions.CaptionEncoder(tokenizer)
    for scene in sd.sample_scenes(4, 60):
        ids, owner = enc.encode(scene.pieces)
        full = tokenizer(scene.caption, padding="max_length", max_length=77)["input_ids"]
        assert ids == full
        # Every object owns the tokens of exactly its colour and shape words.
        for j, obj in enumerate(scene.objects):
            owned = [i for i, o in zip(ids, owner) if o == j]
            expected = tokenizer(f"{obj.colour} {obj.shape}", add_special_tokens=False)["input_ids"]
            assert owned == expected


def test_grounding_loss_known_answers():
    masks = torch.zeros(1, sd.MAX_OBJECTS, 8, 8)
    masks[0, 0, :4] = 1  # object 0: top half
    owner = torch.full((1, 77), -1)
    owner[0, 2] = 0
    inside = torch.zeros(1, 64, 77)
    inside[0, :32, 2] = 1 / 32  # token 2 attends only to the top half
    outside = torch.zeros(1, 64, 77)
    outside[0, 32:, 2] = 1 / 32
    assert grounding.grounding_loss([inside], masks, owner).item() == pytest.approx(0.0, abs=1e-6)
    assert grounding.grounding_loss([outside], masks, owner).item() == pytest.approx(1.0, abs=1e-6)
    assert grounding.grounding_loss([outside], masks, torch.full((1, 77), -1)).item() == 0.0


def test_pixel_term_asks_for_the_whole_object_where_the_token_term_does_not():
    """Attention on only the object's centre satisfies the token term; the pixel term tells it
    from attention covering the whole object."""
    masks = torch.zeros(1, sd.MAX_OBJECTS, 8, 8)
    masks[0, 0, :4] = 1  # object 0: the top half
    owner = torch.full((1, 77), -1)
    owner[0, 2] = 0
    cover = torch.zeros(1, 64, 77)
    cover[0, :32, 2] = 1.0  # every object pixel attends to token 2 ...
    cover[0, 32:, 0] = 1.0  # ... the others to the start token
    core = torch.zeros(1, 64, 77)
    core[0, :4, 2] = 1.0  # four object pixels attend to token 2
    core[0, 4:, 0] = 1.0
    assert grounding.grounding_loss([core], masks, owner).item() == pytest.approx(0.0, abs=1e-6)
    assert grounding.grounding_loss([cover], masks, owner, pixel_weight=1.0).item() == pytest.approx(0.0, abs=1e-4)
    assert grounding.grounding_loss([core], masks, owner, pixel_weight=1.0).item() > 1.0


def _eager_self_share(probs: np.ndarray, mask: np.ndarray, power: float = 1.0) -> tuple[float, float]:
    """Share of an object's query rows' attention on its keys, the keys weighted by the object's
    coverage of the layer's grid (the mask block-averaged to it) and the rows by that coverage to
    ``power``, and the rows' mean KL from the object's coverage as a distribution: written out
    cell by cell."""
    side = int(round(probs.shape[0] ** 0.5))
    f = mask.shape[0] // side
    cover = [mask[(c // side) * f:(c // side + 1) * f, (c % side) * f:(c % side + 1) * f].mean() for c in range(side * side)]
    rows = [c ** power for c in cover]
    num = sum(rows[q] * probs[q, n] * cover[n] for q in range(len(cover)) for n in range(len(cover)))
    target = [c / sum(cover) for c in cover]
    kl = [sum(t * np.log(t / max(probs[q, n], 1e-8)) for n, t in enumerate(target) if t > 0) for q in range(len(cover))]
    return num / sum(rows), sum(r * k for r, k in zip(rows, kl)) / sum(rows)


def test_self_grounding_loss_matches_an_eager_share():
    rng = np.random.default_rng(5)
    masks = torch.zeros(2, sd.MAX_OBJECTS, 16, 16)
    masks[0, 0, 2:9, 3:7] = 1
    masks[0, 1, 10:15, 9:16] = 1
    masks[1, 0, 4:13, 0:5] = 1  # image 1 draws one object; its other slots are empty
    layers = []
    for side in (8, 4):  # two grids, as the UNet's two levels
        logits = rng.normal(size=(2, side * side, side * side)) * 2
        layers.append(torch.softmax(torch.from_numpy(logits), -1).float())
    results = {}
    for cover_weight, power in ((0.0, 1.0), (0.5, 1.0), (0.0, 3.0), (0.5, 3.0)):
        expected = []
        for probs in layers:
            terms = [_eager_self_share(probs[b].double().numpy(), masks[b, k].numpy(), power)
                     for b in range(2) for k in range(sd.MAX_OBJECTS) if masks[b, k].sum() > 0]
            expected.append(np.mean([(1 - x) ** 2 + cover_weight * kl for x, kl in terms]))
        got = grounding.self_grounding_loss(layers, masks, cover_weight, query_power=power).item()
        assert got == pytest.approx(float(np.mean(expected)), rel=1e-5)
        results[cover_weight, power] = got
    assert results[0.0, 3.0] != pytest.approx(results[0.0, 1.0], rel=1e-3)  # the rim's rows count less
    # Known answers: an object's rows all on its own cells → 0; all off the object → 1.
    m = torch.zeros(1, sd.MAX_OBJECTS, 8, 8)
    m[0, 0, :4] = 1
    onto = torch.zeros(1, 64, 64)
    onto[0, :, :32] = 1 / 32
    off = torch.zeros(1, 64, 64)
    off[0, :, 32:] = 1 / 32
    assert grounding.self_grounding_loss([onto], m).item() == pytest.approx(0.0, abs=1e-6)
    assert grounding.self_grounding_loss([off], m).item() == pytest.approx(1.0, abs=1e-6)
    assert grounding.self_grounding_loss([off], torch.zeros_like(m)).item() == 0.0
    assert grounding.self_grounding_loss([onto], m, cover_weight=1.0).item() == pytest.approx(0.0, abs=1e-5)
    # Every pixel on one cell of the object: all of the share, none of the cover.
    point = torch.zeros(1, 64, 64)
    point[0, :, 5] = 1
    assert grounding.self_grounding_loss([point], m).item() == pytest.approx(0.0, abs=1e-6)
    assert grounding.self_grounding_loss([point], m, cover_weight=1.0).item() > 1.0


def test_noise_tilt_weights_images_by_timestep():
    t = torch.tensor([0, 250, 500, 1000])
    assert grounding.noise_tilt(t, 1000, 0.0).tolist() == [1.0, 1.0, 1.0, 1.0]
    assert grounding.noise_tilt(t, 1000, 1.0).tolist() == pytest.approx([0.0, 0.5, 1.0, 2.0])
    # Its mean over uniform timesteps is 1, so the tilt moves the term, it does not scale it.
    assert grounding.noise_tilt(torch.arange(1000), 1000, 1.0).mean().item() == pytest.approx(1.0, abs=1e-3)


def test_grounding_loss_weights_each_image():
    """Two images, one grounded and one not: the weights choose whose error counts."""
    masks = torch.zeros(2, sd.MAX_OBJECTS, 8, 8)
    masks[:, 0, :4] = 1
    owner = torch.full((2, 77), -1)
    owner[:, 2] = 0
    probs = torch.zeros(2, 64, 77)
    probs[0, :32, 2] = 1 / 32  # image 0 attends inside its object
    probs[1, 32:, 2] = 1 / 32  # image 1 outside
    assert grounding.grounding_loss([probs], masks, owner).item() == pytest.approx(0.5, abs=1e-6)
    assert grounding.grounding_loss([probs], masks, owner, sample_weight=torch.tensor([2.0, 0.0])).item() == pytest.approx(0.0, abs=1e-6)
    assert grounding.grounding_loss([probs], masks, owner, sample_weight=torch.tensor([0.0, 2.0])).item() == pytest.approx(1.0, abs=1e-6)


def test_noise_tilt_outside_its_range_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        ts.parse_args(["--ground-noise-tilt", "1.5"])
    assert e.value.code == 2
    assert "--ground-noise-tilt must lie in 0..1" in capsys.readouterr().err


def test_guidance_outside_its_range_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        ts.parse_args(["--guidance", "-1"])
    assert e.value.code == 2
    assert "--guidance must lie in 0..100" in capsys.readouterr().err


def test_tiny_training_run_writes_a_loadable_pipeline(tmp_path, collect):
    out = tmp_path / "shapes"
    args = ["--out", str(out), "--vae-steps", "2", "--steps", "2", "--batch", "4", "--vae-batch", "4",
            "--ground-weight", "0.1", "--ground-noise-tilt", "1", "--scenes", "64", "--no-progress", "--seed", "3",
            "--guidance", "2.5"]
    assert ts.main(args) == 0
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert {"unet", "vae", "text_encoder", "tokenizer", "scheduler"} <= set(index)
    meta = json.loads((out / "training.json").read_text())
    assert meta["args"]["seed"] == 3 and meta["args"]["steps"] == 2
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    assert size <= 15e6

    from bridge.bus import Bus
    from bridge.engine import Engine, GenerationRequest

    engine = Engine.load(str(out), device="cpu", progress=False)
    assert engine.native_size == (64, 64)
    assert engine.validate(GenerationRequest("a red circle")).guidance == 2.5  # from its bridge_defaults.json
    sink = collect
    end = engine.generate(GenerationRequest("a red circle and a blue square", steps=2), Bus([sink]))
    assert end.status == "completed" and end.image.shape == (64, 64, 3)
    assert sink.start.words == ("a", "red", "circle", "and", "a", "blue", "square")
    assert np.isfinite(sink.frames[-1].cumulative.astype(np.float32)).all()


def test_training_attention_matches_the_default_processor_and_keeps_the_probs():
    """The explicit training attention computes what diffusers' default does, and keeps one
    (B, N, L) probability map per cross-attention layer that sums to one over the tokens, and
    one (B, N, N) per self-attention layer."""
    torch.manual_seed(0)
    unet = arch.make_unet((32, 64)).eval()
    z = torch.randn(2, 4, arch.LATENT_SIZE, arch.LATENT_SIZE)
    cond = torch.randn(2, arch.MAX_TOKENS, arch.TEXT_WIDTH)
    t = torch.tensor([10, 900])
    with torch.no_grad():
        expected = unet(z, t, cond).sample
        store: list = []
        self_store: list = []
        unet.set_attn_processor(grounding.training_processors(unet, store, self_store))
        got = unet(z, t, cond).sample
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert len(self_store) == 7  # each transformer block's self-attention too
    for p in self_store:
        assert p.shape[0] == 2 and p.shape[1] == p.shape[2]
        torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:2]))
    cross_layers = sum(name.endswith("attn2.processor") for name in unet.attn_processors)
    assert len(store) == cross_layers == 7  # one per down level, the mid block, two per up level
    sides = sorted({int(p.shape[1] ** 0.5) for p in store})
    assert sides == [arch.LATENT_SIZE // 2, arch.LATENT_SIZE]
    for p in store:
        assert p.shape[0] == 2 and p.shape[2] == arch.MAX_TOKENS
        torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:2]))


def test_scenes_are_encoded_once_with_masks_and_owned_tokens(tokenizer):
    """The training set's latents come from the VAE, its masks are the rasterised masks pooled to
    latent size, and its captions are the scenes' captions."""
    args = ts.parse_args(["--scenes", "20", "--precision", "fp32"])
    args.bf16 = False
    torch.manual_seed(0)
    vae = arch.make_vae().eval()
    data = dataset.encode_scenes(vae, captions.CaptionEncoder(tokenizer), args, torch.device("cpu"))
    assert len(data) == 20
    assert data.latents.shape == (20, 4, arch.LATENT_SIZE, arch.LATENT_SIZE)
    # The same draw as the training set's: scenes and colour jitter from seed + 2, in batches of 512.
    rng = np.random.default_rng(args.seed + 2)
    scenes = [sd.sample_scene(rng) for _ in range(512)]
    images, masks = sd.rasterise(scenes, "cpu", torch.Generator().manual_seed(args.seed + 2))
    pooled = torch.nn.functional.adaptive_avg_pool2d(masks, arch.LATENT_SIZE)
    torch.testing.assert_close(data.masks[0].float(), pooled[0], atol=1e-3, rtol=0)
    ids, owner = captions.CaptionEncoder(tokenizer).encode(scenes[0].pieces)
    assert data.ids[0].tolist() == ids and data.owner[0].tolist() == owner
    with torch.no_grad():
        z = vae.encode(images[:1]).latent_dist.mean * vae.config.scaling_factor
    torch.testing.assert_close(data.latents[:1], z, atol=1e-4, rtol=1e-4)
    empty, _ = captions.CaptionEncoder(tokenizer).encode([])
    assert data.empty_ids.tolist() == empty


def test_saved_pipeline_predicts_v_and_has_a_short_text_encoder(tmp_path):
    """The recipe's choices reach the saved folder: v-prediction in the scheduler, 32 text positions."""
    out = tmp_path / "shapes"
    assert ts.main(["--out", str(out), "--vae-steps", "1", "--steps", "1", "--batch", "2", "--vae-batch", "2",
                    "--scenes", "8", "--no-progress"]) == 0
    sched = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert sched["prediction_type"] == "v_prediction" and sched["timestep_spacing"] == "trailing"
    assert json.loads((out / "text_encoder" / "config.json").read_text())["max_position_embeddings"] == arch.MAX_TOKENS
    assert json.loads((out / "tokenizer" / "tokenizer_config.json").read_text())["model_max_length"] == arch.MAX_TOKENS


def _unet_weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))


def test_fine_tune_starts_from_a_folder_and_the_self_term_moves_self_attention(tmp_path):
    """--init keeps the folder's VAE and tokenizer and starts from its weights; one step with the
    self-grounding term gives other self-attention weights than the same step without it."""
    base = tmp_path / "base"
    common = ["--steps", "1", "--batch", "4", "--scenes", "16", "--no-progress", "--precision", "fp32", "--lr", "0.05"]
    assert ts.main(["--out", str(base), "--vae-steps", "1", "--vae-batch", "2", *common]) == 0
    runs = {}
    for weight in ("0", "1"):
        out = tmp_path / f"tuned-{weight}"
        assert ts.main(["--out", str(out), "--init", str(base), "--self-ground-weight", weight, *common]) == 0
        runs[weight] = _unet_weights(out)
    meta = json.loads((tmp_path / "tuned-1" / "training.json").read_text())
    assert meta["args"]["self_ground_weight"] == 1.0 and meta["args"]["init"] == str(base)
    assert meta["init_training"]["args"]["vae_steps"] == 1  # the base's own record is kept
    for part in ("vae/diffusion_pytorch_model.safetensors", "tokenizer/tokenizer.json"):
        assert (tmp_path / "tuned-1" / part).read_bytes() == (base / part).read_bytes()
    start = _unet_weights(base)
    q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    assert not torch.equal(runs["0"][q], start[q])  # a step was taken from the base's weights
    assert not torch.equal(runs["1"][q], runs["0"][q])
    text = "text_encoder/model.safetensors"
    assert (tmp_path / "tuned-1" / text).read_bytes() != (base / text).read_bytes()  # the text encoder learns too…
    frozen = tmp_path / "frozen"
    assert ts.main(["--out", str(frozen), "--init", str(base), "--self-ground-weight", "1", "--freeze-text", *common]) == 0
    assert (frozen / text).read_bytes() == (base / text).read_bytes()  # …unless it is frozen
    assert not torch.equal(_unet_weights(frozen)[q], start[q])  # while the UNet still learns


def test_init_that_is_not_a_unet_pipeline_folder_is_a_usage_error(tmp_path, capsys):
    from bridge.models.resolve import BUILTIN_DIR

    for folder, missing in ((tmp_path, "no unet, text_encoder, vae, tokenizer"), (BUILTIN_DIR / "shapes-dit", "no unet")):
        with pytest.raises(SystemExit) as e:
            ts.parse_args(["--init", str(folder)])
        assert e.value.code == 2
        assert f"not a Stable Diffusion pipeline folder like the shipped one ({missing})" in capsys.readouterr().err
