"""Load a text-to-image diffusers pipeline on the right device in the right precision.

All sources, the built-in models included, end in the same diffusers call
(``AutoPipelineForText2Image`` for folders and hub ids, the SD / SDXL pipeline's
``from_single_file`` for checkpoints).  The loaded pipeline's model family
(``bridge.families``) is picked from its components.  Every failure becomes one
``ModelError`` sentence.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelError
from .defaults import read_defaults
from .resolve import ModelSource, resolve_model

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    pipe: object
    source: ModelSource
    device: str
    dtype: object  # torch.dtype
    family: str  # the family's name: "sd" | "sdxl" | "sd3" | "flux"
    defaults: dict = field(default_factory=dict)  # the folder's bridge_defaults.json, e.g. {"guidance": 3.0}
    arch: object = None  # the pipeline's ModelFamily (bridge.families); None: the engine picks it


def pick_device(device: str = "auto") -> str:
    import torch

    device = (device or "auto").lower()
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} was asked for but no CUDA GPU is available; use --device cpu or auto")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelError("device 'mps' was asked for but Apple Metal is not available; use --device cpu or auto")
    if device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise ModelError(f"unknown device {device!r}; choose auto, cpu, cuda, cuda:N or mps")
    return device


def pick_dtype(dtype: str = "auto", device: str = "cpu"):
    import torch

    names = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
             "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    dtype = (dtype or "auto").lower()
    if dtype == "auto":
        return torch.float32 if device == "cpu" else torch.float16
    if dtype not in names:
        raise ModelError(f"unknown dtype {dtype!r}; choose auto, fp32, fp16 or bf16")
    return names[dtype]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def _folder_kwargs(model_index: dict) -> dict:
    """Skip the NSFW checker: the bridge streams every step anyway, a checker cannot help there."""
    if "safety_checker" in model_index:
        return {"safety_checker": None, "requires_safety_checker": False}
    return {}


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A fast check before any download: without it the hub client retries for ~30 s."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _hub_model_index(repo: str) -> tuple[dict, bool]:
    """model_index.json of a hub model and whether it came from the local cache."""
    from diffusers import DiffusionPipeline

    try:
        return DiffusionPipeline.load_config(repo, local_files_only=True), True
    except Exception:
        pass
    if _offline():
        raise ModelError(f"model {repo!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                         "download it first, or use a local folder or 'builtin'")
    if not _hub_reachable():
        raise ModelError(f"model {repo!r} is not in the local Hugging Face cache and the hub is unreachable (no network); "
                         "download it on a connected machine, or use a local folder or 'builtin'")
    try:
        return DiffusionPipeline.load_config(repo), False
    except Exception as exc:  # unknown repo, gated repo, not a diffusers pipeline …
        raise ModelError(f"could not fetch model {repo!r} from the Hugging Face hub: {_first_line(exc)}") from None


def _load_folder_or_hub(source: ModelSource, dtype):
    from diffusers import AutoPipelineForText2Image

    if source.kind == "folder":
        model_index = json.loads((Path(source.location) / "model_index.json").read_text(encoding="utf-8"))
        return AutoPipelineForText2Image.from_pretrained(source.location, dtype=dtype, **_folder_kwargs(model_index))
    model_index, cached = _hub_model_index(source.location)
    try:
        return AutoPipelineForText2Image.from_pretrained(
            source.location, dtype=dtype, local_files_only=cached, **_folder_kwargs(model_index))
    except Exception:
        if not cached:
            raise
    # config cached but some weights missing: let the hub client fetch them
    return AutoPipelineForText2Image.from_pretrained(source.location, dtype=dtype, **_folder_kwargs(model_index))


def _is_network(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(k in text for k in ("connection", "offline", "resolve", "timed out", "localentrynotfound", "max retries"))


def _is_sdxl_checkpoint(path: str) -> bool:
    if path.lower().endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            return any(k.startswith("conditioner.embedders.1") for k in f.keys())
    return False  # .ckpt: reading keys means unpickling everything; the name is the hint
    

def _load_single_file(source: ModelSource, dtype):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    sdxl = _is_sdxl_checkpoint(source.location) or "xl" in Path(source.location).name.lower()
    cls = StableDiffusionXLPipeline if sdxl else StableDiffusionPipeline
    kwargs = {} if sdxl else {"safety_checker": None, "requires_safety_checker": False}
    return cls.from_single_file(source.location, dtype=dtype, **kwargs)


class _TruncationReported(logging.Filter):
    """diffusers logs the whole cut-off text of a long prompt (thousands of characters, twice on
    Flux and SD3); the bridge reports the dropped words itself, in one clipped line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("The following part of your input was truncated")


def _quiet_truncation_notices(dlog) -> None:
    dlog.get_logger("diffusers")  # makes diffusers' own handler, if it has none yet
    for handler in logging.getLogger("diffusers").handlers:
        if not any(isinstance(f, _TruncationReported) for f in handler.filters):
            handler.addFilter(_TruncationReported())


def load_model(model: str | None = "builtin", device: str = "auto", dtype: str = "auto", progress: bool = True,
               threads: int = 0) -> LoadedModel:
    """Load ``model`` (see :func:`resolve_model`) → :class:`LoadedModel`; ModelError on any failure.

    ``threads``: torch's CPU threads (0: one fewer than the usable cores, see bridge/threads.py).
    """
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    from ..threads import apply_threads

    source = resolve_model(model)
    apply_threads(threads)
    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    (dlog.enable_progress_bar if progress else dlog.disable_progress_bar)()
    (tlog.enable_progress_bar if progress else tlog.disable_progress_bar)()
    _quiet_truncation_notices(dlog)
    # Loading makes transformers warn that torchvision is missing: the image processors it
    # would serve belong to safety checkers and image encoders the bridge never loads.
    verbosity = tlog.get_verbosity()
    tlog.set_verbosity_error()
    try:
        return _load(source, dev, torch_dtype)
    finally:
        tlog.set_verbosity(verbosity)


def _load(source: ModelSource, dev: str, torch_dtype) -> LoadedModel:
    log.info("loading model %s on %s (%s)", source.name, dev, str(torch_dtype).replace("torch.", ""))
    # read first: a broken defaults file should fail before minutes of weight loading
    defaults = read_defaults(source.location) if source.kind == "folder" else {}
    try:
        warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
        if source.kind == "single_file":
            pipe = _load_single_file(source, torch_dtype)
        else:
            pipe = _load_folder_or_hub(source, torch_dtype)
        pipe = pipe.to(dev)
    except ModelError:
        raise
    except Exception as exc:
        if source.kind != "folder" and (_is_network(exc) or _offline()):
            raise ModelError(
                f"could not load model {source.name!r}: it needs files from the Hugging Face hub, which is unreachable "
                "and not in the local cache"
            ) from None
        raise ModelError(f"could not load model {source.name!r}: {_first_line(exc)}") from None
    from ..families import family_for

    arch = family_for(pipe, source.name)
    arch.configure(defaults)
    pipe.set_progress_bar_config(disable=True)  # the bridge shows its own progress
    if defaults:
        log.info("model defaults from its folder: %s", ", ".join(f"{k} {v:g}" for k, v in defaults.items()))
    return LoadedModel(pipe, source, dev, torch_dtype, arch.name, defaults, arch)
