"""Previews show the picture forming: on the built-in model the default preview (each step's
denoised estimate, fully decoded as its folder recommends) resembles the final image a quarter
of the way in, where the old default (linear preview of the noisy latents) was noise."""

import numpy as np
import pytest

from bridge.bus import Bus
from bridge.engine import Engine, GenerationRequest


@pytest.fixture(scope="module")
def shapes_engine():
    return Engine.load("builtin", device="cpu", progress=False)


def _similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two images' pixels (1: same picture up to brightness and contrast)."""
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b) + 1e-9))


def _render(engine, collect, **kw):
    req = GenerationRequest("a yellow star and a green circle", seed=0, steps=20, **kw)
    end = engine.generate(req, Bus([collect]))
    assert end.status == "completed", end.error
    return [f.preview for f in collect.frames], end.image


def test_default_preview_resembles_the_final_image_early(shapes_engine, collect):
    assert shapes_engine.validate(GenerationRequest("a star")).vae_every == 1  # the folder's recommendation
    previews, final = _render(shapes_engine, collect)
    assert collect.start.extra["preview"] == "denoised"
    assert _similarity(previews[4], final) > 0.5  # measured 0.69; the old default: -0.05
    assert _similarity(previews[-1], final) > 0.95
    assert previews[4].std() > 20  # not a flat colour


def test_the_noisy_latents_remain_available_and_look_like_noise(shapes_engine, collect):
    previews, final = _render(shapes_engine, collect, preview="latents", vae_every=0)
    assert collect.start.extra["preview"] == "latents"
    assert _similarity(previews[4], final) < 0.3


def test_an_unknown_preview_source_is_one_sentence(tiny_engine):
    from bridge.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match="preview must be one of denoised, latents"):
        tiny_engine.validate(GenerationRequest("a red circle", preview="x0"))
    assert tiny_engine.validate(GenerationRequest("a red circle")).vae_every == 0  # no folder recommendation
