"""The denoised-estimate tap: an x̂₀ every step for each scheduler kind, the image unchanged,
the scheduler restored; and on the shapes model x̂₀ shows the final picture long before the
noisy latents do."""

import numpy as np
import pytest
import torch

from _pipelines import make_lcm_like, make_sd2_like, make_sdxl_like
from bridge.denoised import DenoisedTap
from bridge.models import load_model


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    from diffusers import AutoPipelineForText2Image

    root = tmp_path_factory.mktemp("denoised")
    out = {name: AutoPipelineForText2Image.from_pretrained(make(root)) for name, make in
           (("ddim", make_sd2_like), ("euler", make_sdxl_like), ("lcm", make_lcm_like))}
    out["dpmsolver++"] = load_model("builtin", device="cpu", progress=False).pipe
    for pipe in out.values():
        pipe.set_progress_bar_config(disable=True)
    return out


def _run(pipe, tap=None, steps=4):
    seen = []

    def on_step_end(_pipe, i, t, kwargs):
        seen.append((kwargs["latents"].clone(), None if tap is None or tap.latest is None else tap.latest.clone()))
        return kwargs

    out = pipe("a red circle", num_inference_steps=steps, guidance_scale=3.0, output_type="np",
               generator=torch.Generator("cpu").manual_seed(3), callback_on_step_end=on_step_end)
    return out.images[0], seen


@pytest.mark.parametrize("kind", ["ddim", "euler", "lcm", "dpmsolver++"])
def test_every_step_has_an_estimate_and_the_image_is_unchanged(pipes, kind):
    pipe = pipes[kind]
    plain, _ = _run(pipe)
    with DenoisedTap(pipe.scheduler) as tap:
        tapped, seen = _run(pipe, tap)
    np.testing.assert_array_equal(tapped, plain)
    assert all(x0 is not None and x0.shape == latents.shape for latents, x0 in seen)
    assert "step" not in vars(pipe.scheduler)  # the class's own method again


def test_a_scheduler_without_an_estimate_reports_none(pipes):
    from diffusers import PNDMScheduler

    pipe = pipes["ddim"]
    original = pipe.scheduler
    pipe.scheduler = PNDMScheduler.from_config(original.config, skip_prk_steps=True)
    try:
        with DenoisedTap(pipe.scheduler) as tap:
            _, seen = _run(pipe, tap)
    finally:
        pipe.scheduler = original
    assert [x0 for _, x0 in seen] == [None] * len(seen)


def test_shapes_estimate_is_the_picture_early(pipes):
    """DPM-Solver++'s last step lands on its x̂₀; at step 5 of 20 x̂₀ is already much closer to
    the final latents than the noisy latents are (what makes the preview show the image forming)."""
    pipe = pipes["dpmsolver++"]
    with DenoisedTap(pipe.scheduler) as tap:
        _, seen = _run(pipe, tap, steps=20)
    final = seen[-1][0]
    torch.testing.assert_close(seen[-1][1], final, atol=1e-3, rtol=1e-3)
    latents, x0 = seen[4]
    assert (x0 - final).norm() < 0.5 * (latents - final).norm()
