"""Model loading: built-in names, local diffusers folders, single-file checkpoints, hub ids."""

from .loader import LoadedModel, load_model, pick_device, pick_dtype
from .resolve import BUILTIN_DIR, ModelSource, resolve_model

__all__ = ["BUILTIN_DIR", "LoadedModel", "ModelSource", "load_model", "pick_device", "pick_dtype", "resolve_model"]
