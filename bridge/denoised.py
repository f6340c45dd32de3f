"""The step's denoised estimate (predicted x₀), kept from the scheduler while a run lasts.

Every scheduler forms x̂₀ on its way to the next latents, and pipelines throw it away: DDIM,
DDPM, Euler, Heun and LMS return it as ``pred_original_sample``, LCM as ``denoised``, and
DPM-Solver++ and UniPC (x₀-predicting) keep it as their newest model output.  A preview of x̂₀
shows the picture from the first steps, where the noisy latents still look like noise.

``DenoisedTap`` wraps one scheduler *instance's* ``step`` for the length of a ``with`` (never the
class) and restores it on exit.  The wrapper calls the original step with the same arguments
(asking for its output object, which only changes how the result is packed), so the run's
maths, and its image, are unchanged.  Schedulers that expose no x̂₀ leave ``latest`` at None.
"""

from __future__ import annotations

import functools

# What a step's preview shows: the denoised estimate where the scheduler forms one (the picture
# from the first steps), or the noisy latents themselves (noise that clears as the run ends).
PREVIEW_SOURCES = ("denoised", "latents")

# Schedulers whose model_outputs hold x̂₀ (their data-prediction form) after each step.
_X0_OUTPUT_ALGORITHMS = ("dpmsolver++", "sde-dpmsolver++")


def _stored_x0(scheduler):
    config = scheduler.config
    outputs = getattr(scheduler, "model_outputs", None)
    if not outputs or outputs[-1] is None:
        return None
    if config.get("algorithm_type") in _X0_OUTPUT_ALGORITHMS or config.get("predict_x0") is True:
        return outputs[-1]
    return None


class DenoisedTap:
    def __init__(self, scheduler):
        self.scheduler = scheduler
        self.latest = None  # x̂₀ of the newest step, (B, C, h, w) like the latents, or None
        self._had_own_step = False
        self._original = None

    def __enter__(self) -> "DenoisedTap":
        self._had_own_step = "step" in vars(self.scheduler)
        self._original = self.scheduler.step
        # Pipelines read the step's signature to decide what to pass (generator, eta): keep it.
        self.scheduler.step = functools.wraps(self._original)(lambda *a, **kw: self._step(*a, **kw))
        return self

    def __exit__(self, *exc) -> None:
        if self._had_own_step:
            self.scheduler.step = self._original
        else:
            del self.scheduler.step  # the class's method again
        self.latest = None

    def _step(self, *args, **kwargs):
        if len(args) > 3:  # options passed by position: pass straight through, nothing to keep
            return self._original(*args, **kwargs)
        return_dict = kwargs.pop("return_dict", True)
        out = self._original(*args, return_dict=True, **kwargs)
        x0 = getattr(out, "pred_original_sample", None)
        if x0 is None:
            x0 = getattr(out, "denoised", None)
        self.latest = _stored_x0(self.scheduler) if x0 is None else x0
        return out if return_dict else out.to_tuple()
