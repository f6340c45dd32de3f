"""Where a run can be stopped: before every layer of the denoiser and the VAE.

A VJ's new prompt, a cancel or a shutdown must take effect within about one layer's time at
any image size, not at the end of a step (a step of a large model at 1024² on a CPU takes
minutes) and not only at cross-attention (self-attention at high resolution is the slow part).

    with InterruptPoints([family.denoiser, family.vae], abort):
        pipe(...)              # RunAborted as soon as abort() is True, at the next layer

A forward pre-hook on every attention module and every residual block asks ``abort()`` (a
plain flag read, so it costs nothing next to a layer) and raises :class:`RunAborted`.  The
hooks are removed on exit, also when the run raised.  Nothing else is changed, so the image
of a run that is not aborted is the plain pipeline's.
"""

from __future__ import annotations


class RunAborted(Exception):
    """Raised inside the pipeline when the run's ``abort`` says so."""


# Module classes that are one "layer" of work: attention of every kind diffusers has, and the
# residual blocks between them (a UNet's ResnetBlock2D, a VAE's up-block resnets).
_LAYER_NAMES = ("Attention", "ResnetBlock")


def is_layer(module) -> bool:
    name = type(module).__name__
    return hasattr(module, "processor") or any(part in name for part in _LAYER_NAMES)


class InterruptPoints:
    def __init__(self, models, abort):
        self.models = [m for m in models if m is not None]
        self.abort = abort
        self._hooks: list = []
        self.points = 0  # how many modules ask

    def _check(self, module, args):
        if self.abort():
            raise RunAborted()

    def __enter__(self) -> "InterruptPoints":
        if self.abort is None:
            return self
        try:
            for model in self.models:
                for module in model.modules():
                    if is_layer(module):
                        self._hooks.append(module.register_forward_pre_hook(self._check))
        except BaseException:
            self._remove()
            raise
        self.points = len(self._hooks)
        return self

    def __exit__(self, *exc) -> None:
        self._remove()

    def _remove(self) -> None:
        while self._hooks:
            self._hooks.pop().remove()
