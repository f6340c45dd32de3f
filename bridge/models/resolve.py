"""Turn what a user typed after --model into a source to load, or one clear sentence why not.

- ``builtin`` (default): the trained shapes model when it is installed, else ``builtin:tiny``.
- ``builtin:tiny`` / ``builtin:shapes``: a model folder shipped in ``bridge/builtin/models/``.
- a folder with ``model_index.json``: a diffusers pipeline folder.
- a ``.safetensors`` / ``.ckpt`` file: a single-file Stable Diffusion checkpoint.
- ``owner/name``: a Hugging Face hub id (needs the network, or the local hub cache).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "builtin" / "models"
BUILTIN_NAMES = ("tiny", "shapes", "shapes-dit")
# how each built-in model is made, for the message when its folder is missing
BUILTIN_RECIPES = {"tiny": "python -m bridge.builtin.make_tiny", "shapes": "python -m bridge.builtin.train_shapes",
                   "shapes-dit": "python -m bridge.builtin.train_shapes_dit"}
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "folder" | "single_file" | "hub"
    location: str  # a path or a hub id
    name: str  # how it is shown in manifests and logs


def resolve_model(model: str | None) -> ModelSource:
    text = (model or "builtin").strip()
    if text == "builtin":
        name = "shapes" if (BUILTIN_DIR / "shapes" / "model_index.json").is_file() else "tiny"
        return _builtin(name)
    if text.startswith("builtin:"):
        return _builtin(text.split(":", 1)[1])
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelError(f"{path} is a folder but not a diffusers pipeline (no model_index.json in it)")
        return ModelSource("folder", str(path.resolve()), text)
    if path.is_file():
        if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
            raise ModelError(f"{path} is not a model checkpoint; expected a .safetensors or .ckpt file or a diffusers folder")
        return ModelSource("single_file", str(path.resolve()), text)
    if path.suffix.lower() in SINGLE_FILE_SUFFIXES or text.startswith((".", "/", "~")) or "\\" in text:
        raise ModelError(f"model file or folder {text} does not exist")
    if _HUB_ID.match(text):
        return ModelSource("hub", text, text)
    raise ModelError(
        f"{text!r} is neither an existing folder or checkpoint file nor a hub id like "
        "'stable-diffusion-v1-5/stable-diffusion-v1-5' (or use 'builtin')"
    )


def _builtin(name: str) -> ModelSource:
    folder = BUILTIN_DIR / name
    if name not in BUILTIN_NAMES:
        raise ModelError(f"unknown built-in model 'builtin:{name}'; choose one of {', '.join('builtin:' + n for n in BUILTIN_NAMES)}")
    if not (folder / "model_index.json").is_file():
        raise ModelError(f"built-in model 'builtin:{name}' is missing from {folder}; make it with `{BUILTIN_RECIPES[name]}`")
    return ModelSource("folder", str(folder), f"builtin:{name}")
