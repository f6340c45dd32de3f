"""SD 2.x-style, SDXL-style, Turbo-style (guidance off) and LCM-style tiny pipelines through the engine.

Each is saved as a real diffusers folder and loaded with ``Engine.load(folder)`` (the same
loader as a user's model); the maps are checked against the plain q/k reference.
"""

import shutil

import numpy as np
import pytest

from _pipelines import make_lcm_like, make_sd2_like, make_sdxl_like
from _qk_reference import QKRecorder
from bridge.bus import Bus
from bridge.engine import Engine, GenerationRequest


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    sdxl = make_sdxl_like(root)
    turbo = root / "tiny-sdxl-turbo"
    shutil.copytree(sdxl, turbo)
    return {"sd2": make_sd2_like(root), "sdxl": sdxl, "turbo": turbo, "lcm": make_lcm_like(root)}


def _run_and_check(engine, req, collect):
    class Marker:
        def on_step(self, frame):
            rec.mark_step()

    req = engine.validate(req)
    with QKRecorder(engine.pipe.unet) as rec:
        end = engine.generate(req, Bus([Marker(), collect]))
    assert end.status == "completed", end.error
    start = collect.start
    ref = rec.reference(start.word_token_indices, engine.uses_cfg(req.guidance), start.map_size)
    assert len(collect.frames) == req.steps == len(ref)
    for frame, (ref_step, ref_cum) in zip(collect.frames, ref):
        np.testing.assert_allclose(frame.maps.astype(np.float64), ref_step, rtol=2**-10, atol=1e-4)
        np.testing.assert_allclose(frame.cumulative.astype(np.float64), ref_cum, rtol=2**-10, atol=1e-4)
    assert end.image.shape == (req.height, req.width, 3)
    return start


def test_sd2_style_linear_projection_v_prediction(family_dirs, collect):
    engine = Engine.load(str(family_dirs["sd2"]), device="cpu", progress=False)
    assert engine.pipe.scheduler.config.prediction_type == "v_prediction"
    start = _run_and_check(engine, GenerationRequest("a blue house, by the sea", steps=2, width=64, height=48), collect)
    assert start.words == ("a", "blue", "house", ",", "by", "the", "sea")
    assert start.extra["cfg"] is True


def test_sdxl_style_two_text_encoders(family_dirs, collect):
    engine = Engine.load(str(family_dirs["sdxl"]), device="cpu", progress=False)
    assert engine.loaded.family == "sdxl"
    assert engine.pipe.unet.config.cross_attention_dim == 64  # both encoders' hidden states, concatenated
    start = _run_and_check(engine, GenerationRequest("a tall tree", steps=2, width=48, height=64), collect)
    assert start.words == ("a", "tall", "tree") and start.guidance == 5.0 and start.extra["cfg"] is True


def test_turbo_style_guidance_off_keeps_the_whole_batch(family_dirs, collect):
    engine = Engine.load(str(family_dirs["turbo"]), device="cpu", progress=False)
    req = GenerationRequest("a small boat", steps=1)
    assert engine.validate(req).guidance == 0.0  # a Turbo model defaults to no guidance
    start = _run_and_check(engine, req, collect)
    assert start.extra["cfg"] is False and start.guidance == 0.0


def test_lcm_style_guidance_input_means_no_cfg_batch(family_dirs, collect):
    engine = Engine.load(str(family_dirs["lcm"]), device="cpu", progress=False)
    assert engine.embeds_guidance
    req = GenerationRequest("a green lamp", steps=3)
    assert engine.validate(req).guidance == 8.0  # passed to the UNet as an embedding, not as CFG
    start = _run_and_check(engine, req, collect)
    assert start.extra["cfg"] is False and start.scheduler == "LCMScheduler"
