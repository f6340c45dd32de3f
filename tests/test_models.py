"""Model names → sources, and every way loading can fail → one ModelError sentence."""

import json

import pytest
import torch
from safetensors.torch import save_file

from bridge.errors import ModelError
from bridge.models import load_model, resolve_model
from bridge.models import resolve as resolve_mod


def _one_sentence(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text and len(text) < 300
    return text


def test_builtin_is_shapes_when_installed_else_tiny(tmp_path, monkeypatch):
    monkeypatch.setattr(resolve_mod, "BUILTIN_DIR", tmp_path)
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "model_index.json").write_text("{}")
    assert resolve_model("builtin").name == "builtin:tiny"
    assert resolve_model(None).name == "builtin:tiny"
    (tmp_path / "shapes").mkdir()
    (tmp_path / "shapes" / "model_index.json").write_text("{}")
    src = resolve_model("builtin")
    assert src.name == "builtin:shapes" and src.kind == "folder" and src.location == str(tmp_path / "shapes")


def test_builtin_tiny_is_an_ordinary_diffusers_folder():
    src = resolve_model("builtin:tiny")
    index = json.loads((resolve_mod.BUILTIN_DIR / "tiny" / "model_index.json").read_text())
    assert src.kind == "folder" and index["_class_name"] == "StableDiffusionPipeline"
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (resolve_mod.BUILTIN_DIR / "tiny" / part).is_dir()


def test_loaded_builtin_tiny_runs_on_cpu_in_fp32(tiny_engine):
    assert tiny_engine.device == "cpu" and tiny_engine.loaded.dtype == torch.float32
    assert tiny_engine.native_size == (64, 64)
    assert type(tiny_engine.pipe.unet).__name__ == "UNet2DConditionModel"


@pytest.mark.parametrize(
    "model,expected",
    [
        ("/no/such/model.safetensors", "does not exist"),
        ("./missing-folder", "does not exist"),
        ("builtin:huge", "unknown built-in model"),
        ("not a model name", "neither an existing folder"),
    ],
)
def test_bad_names_and_paths(model, expected):
    with pytest.raises(ModelError) as err:
        load_model(model, progress=False)
    assert expected in _one_sentence(err.value)


def test_folder_without_model_index(tmp_path):
    with pytest.raises(ModelError) as err:
        load_model(str(tmp_path), progress=False)
    assert "no model_index.json" in _one_sentence(err.value)


def test_file_that_is_not_a_checkpoint(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    with pytest.raises(ModelError) as err:
        load_model(str(bad), progress=False)
    assert "not a model checkpoint" in _one_sentence(err.value)


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "model.ckpt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelError) as err:
        load_model(str(bad), progress=False)
    assert "could not load model" in _one_sentence(err.value)


def test_broken_diffusers_folder(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}))
    with pytest.raises(ModelError) as err:
        load_model(str(tmp_path), progress=False)
    assert "could not load model" in _one_sentence(err.value)


def test_hub_id_with_offline_mode(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as err:
        load_model("someone/surely-not-cached-model", progress=False)
    assert "HF_HUB_OFFLINE" in _one_sentence(err.value)


def test_hub_id_without_network(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a real, refused connection
    with pytest.raises(ModelError) as err:
        load_model("someone/surely-not-cached-model", progress=False)
    assert "unreachable" in _one_sentence(err.value)


def test_single_file_that_needs_the_hub_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = tmp_path / "sd15-like.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3)}, str(path))
    with pytest.raises(ModelError) as err:
        load_model(str(path), progress=False)
    assert "could not load model" in _one_sentence(err.value)


def test_bad_device_and_dtype():
    with pytest.raises(ModelError, match="unknown device"):
        load_model("builtin:tiny", device="tpu", progress=False)
    with pytest.raises(ModelError, match="unknown dtype"):
        load_model("builtin:tiny", dtype="int8", progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA GPU"):
            load_model("builtin:tiny", device="cuda", progress=False)


def test_make_tiny_rebuilds_the_shipped_model_byte_for_byte(tmp_path):
    from bridge.builtin.make_tiny import make_tiny
    from bridge.preview import LATENT_RGB_FILE

    shipped = resolve_mod.BUILTIN_DIR / "tiny"
    rebuilt = make_tiny(tmp_path / "tiny")
    files = sorted(p.relative_to(shipped) for p in shipped.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(rebuilt) for p in rebuilt.rglob("*") if p.is_file())
    for rel in files:
        if rel.name == LATENT_RGB_FILE:  # fitted through a VAE decode: float sums vary with thread count
            a, b = (json.loads((d / rel).read_text()) for d in (shipped, rebuilt))
            torch.testing.assert_close(torch.tensor(a["factors"]), torch.tensor(b["factors"]), atol=1e-6, rtol=1e-4)
            torch.testing.assert_close(torch.tensor(a["bias"]), torch.tensor(b["bias"]), atol=1e-6, rtol=1e-4)
        else:  # weights, configs and tokenizer: exactly the same bytes
            assert (shipped / rel).read_bytes() == (rebuilt / rel).read_bytes(), rel
    assert sum((shipped / rel).stat().st_size for rel in files) < 3_000_000


def _tiny_copy(tmp_path):
    import shutil

    folder = tmp_path / "tiny"
    shutil.copytree(resolve_mod.BUILTIN_DIR / "tiny", folder)
    return folder


def test_a_folders_bridge_defaults_set_its_default_guidance(tmp_path):
    from bridge.engine import Engine, GenerationRequest

    folder = _tiny_copy(tmp_path)
    (folder / "bridge_defaults.json").write_text('{"guidance": 2.0}')
    engine = Engine.load(str(folder), device="cpu", progress=False)
    assert engine.validate(GenerationRequest("a cat")).guidance == 2.0
    assert engine.validate(GenerationRequest("a cat", guidance=6.0)).guidance == 6.0  # a named value wins


def test_the_shipped_shapes_model_recommends_guidance_3_and_full_previews():
    from bridge.models.defaults import read_defaults

    src = resolve_model("builtin:shapes")
    assert read_defaults(src.location) == {"guidance": 3.0, "vae_every": 1}


@pytest.mark.parametrize(
    "text,expected",
    [
        ("{guidance: 3}", "is not readable JSON"),
        ("[3]", "must hold a JSON object"),
        ('{"guidance": 3, "steps": 4}', "unknown keys ['steps']"),
        ('{"guidance": "high"}', "'guidance' must be a number from 0 to 100"),
        ('{"guidance": -1}', "'guidance' must be a number from 0 to 100"),
        ('{"guidance": true}', "'guidance' must be a number from 0 to 100"),
        ('{"guidance": NaN}', "'guidance' must be a number from 0 to 100"),
        ('{"vae_every": 1.5}', "'vae_every' must be a whole number from 0 to 1000"),
        ('{"vae_every": -1}', "'vae_every' must be a whole number from 0 to 1000"),
        ('{"vae_every": false}', "'vae_every' must be a whole number from 0 to 1000"),
    ],
)
def test_a_broken_bridge_defaults_file_is_named_in_one_sentence(tmp_path, text, expected):
    folder = _tiny_copy(tmp_path)
    (folder / "bridge_defaults.json").write_text(text)
    with pytest.raises(ModelError) as err:
        load_model(str(folder), device="cpu", progress=False)
    message = _one_sentence(err.value)
    assert expected in message and "bridge_defaults.json" in message
