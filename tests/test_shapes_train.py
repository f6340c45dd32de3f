"""The training script: caption encoding, the grounding term, and a tiny end-to-end run that writes
a standard pipeline folder the engine loads like any model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bridge.builtin import clip_bpe
from bridge.builtin import shapes_data as sd
from bridge.builtin import train_shapes as ts


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import CLIPTokenizer

    folder = clip_bpe.write_clip_tokenizer(tmp_path_factory.mktemp("tok"), ts.MERGES)
    return CLIPTokenizer.from_pretrained(folder)


def test_wordwise_encoding_equals_whole_caption_tokenization(tokenizer):
    enc = ts.CaptionEncoder(tokenizer)
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
    assert ts.grounding_loss([inside], masks, owner).item() == pytest.approx(0.0, abs=1e-6)
    assert ts.grounding_loss([outside], masks, owner).item() == pytest.approx(1.0, abs=1e-6)
    assert ts.grounding_loss([outside], masks, torch.full((1, 77), -1)).item() == 0.0


def test_tiny_training_run_writes_a_loadable_pipeline(tmp_path, collect):
    out = tmp_path / "shapes"
    args = ["--out", str(out), "--vae-steps", "2", "--steps", "2", "--batch", "4", "--vae-batch", "4",
            "--ground-weight", "0.1", "--no-progress", "--seed", "3"]
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
    sink = collect
    end = engine.generate(GenerationRequest("a red circle and a blue square", steps=2), Bus([sink]))
    assert end.status == "completed" and end.image.shape == (64, 64, 3)
    assert sink.start.words == ("a", "red", "circle", "and", "a", "blue", "square")
    assert np.isfinite(sink.frames[-1].cumulative.astype(np.float32)).all()
