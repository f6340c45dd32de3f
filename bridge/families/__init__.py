"""Model families: one module per architecture, picked from the pipeline's components.

    family = family_for(pipe)        # ModelError when no family knows the pipeline

Adding an architecture is one new module with a :class:`ModelFamily` subclass and one entry in
``FAMILIES`` (asked in order; the first that accepts the pipeline wins).
"""

from __future__ import annotations

from ..errors import ModelError
from .base import Call, ModelFamily, Site
from .flux import FluxFamily
from .sd3 import SD3Family
from .unet import UNetFamily

FAMILIES: tuple[type[ModelFamily], ...] = (
    UNetFamily,  # SD 1.x, 2.x, XL, Turbo, LCM
    SD3Family,  # SD3, SD3.5
    FluxFamily,  # FLUX.1 schnell, dev
)


def family_for(pipe, name: str | None = None) -> ModelFamily:
    """The family that knows ``pipe``; ``name`` is how the model is called in the error."""
    for cls in FAMILIES:
        if cls.accepts(pipe):
            return cls(pipe)
    what = f"model {name!r}" if name else "this model"
    raise ModelError(f"{what} is a {type(pipe).__name__}, which no model family of this bridge can capture "
                     "(supported: UNet pipelines such as Stable Diffusion 1.x, 2.x and XL, Stable Diffusion 3 / 3.5 and FLUX.1)")


__all__ = ["FAMILIES", "Call", "FluxFamily", "ModelFamily", "SD3Family", "Site", "UNetFamily", "family_for"]
