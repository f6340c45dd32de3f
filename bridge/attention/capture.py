"""Install capture processors on a UNet's cross-attention modules for the length of a ``with``.

    with AttentionCapture(pipe.unet, layers=("up", 16)) as capture:
        capture.begin(aggregator)      # start of a run
        pipe(...)                      # processors feed the aggregator
        capture.end()

Only cross-attention modules (``attn2``, ``is_cross_attention``) get a processor; self-attention
keeps its own (SDPA) processor.  Every original processor is put back on exit, also when the
run raised.
"""

from __future__ import annotations

from collections.abc import Iterable

from .aggregate import Aggregator
from .processor import CaptureProcessor


def cross_attention_modules(model) -> list[tuple[str, object]]:
    """(name, module) for every cross-attention module of a UNet."""
    from diffusers.models.attention_processor import Attention

    found = []
    for name, module in model.named_modules():
        if isinstance(module, Attention) and (getattr(module, "is_cross_attention", False) or name.endswith("attn2")):
            found.append((name, module))
    return found


class LayerFilter:
    """Which cross-attention layers feed the maps.

    ``None`` or empty: all.  Otherwise a list of selectors, a layer is kept if any matches:
    an int (or digits) is a downsampling factor relative to the image (8, 16, 32, 64, as in
    DAAM: 8 is the latent resolution); a string is a substring of the module name
    ("down", "mid", "up", "up_blocks.1").
    """

    def __init__(self, selectors: Iterable | None = None):
        self.factors, self.names = set(), []
        for s in selectors or ():
            text = str(s).strip()
            if text.isdigit():
                self.factors.add(int(text))
            elif text:
                self.names.append(text)

    @property
    def everything(self) -> bool:
        return not self.factors and not self.names

    def keeps(self, name: str, image_factor: int) -> bool:
        if self.everything:
            return True
        return image_factor in self.factors or any(n in name for n in self.names)


class RunAborted(Exception):
    """Raised inside the UNet by a capture processor when the run's ``abort`` says so."""


class AttentionCapture:
    def __init__(self, model, layers=None, vae_factor: int = 8):
        self.model = model
        self.filter = LayerFilter(layers)
        self.vae_factor = vae_factor
        self.aggregator: Aggregator | None = None
        self.abort = None  # a cheap callable; True ends the run in the middle of a step
        self._originals: list[tuple[object, object]] = []
        self._names: list[str] = []

    @property
    def layer_names(self) -> list[str]:
        return list(self._names)

    def __enter__(self) -> "AttentionCapture":
        modules = cross_attention_modules(self.model)
        if not modules:
            raise ValueError("this model has no cross-attention layers to capture")
        try:
            for name, module in modules:
                original = module.processor
                self._originals.append((module, original))
                module.set_processor(CaptureProcessor(name, original, self))
                self._names.append(name)
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.aggregator = self.abort = None
        self._restore()

    def _restore(self) -> None:
        while self._originals:
            module, original = self._originals.pop()
            module.set_processor(original)
        self._names.clear()

    def begin(self, aggregator: Aggregator, abort=None) -> None:
        """Feed ``aggregator`` from now on.  ``abort`` (optional, must be cheap: it is asked at
        every cross-attention call) lets a VJ's new prompt end a run mid-step instead of
        waiting for a whole step of a large model."""
        self.aggregator = aggregator
        self.abort = abort

    def end(self) -> None:
        self.aggregator = self.abort = None

    def check_abort(self) -> None:
        if self.abort is not None and self.abort():
            raise RunAborted()

    def wants(self, name: str, hidden_states, aggregator: Aggregator) -> bool:
        if self.filter.everything:
            return True
        n = hidden_states.shape[1] if hidden_states.ndim == 3 else hidden_states.shape[2] * hidden_states.shape[3]
        _, _, down = aggregator.size_of(n)
        return self.filter.keeps(name, down * self.vae_factor)
