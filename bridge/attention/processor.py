"""The hooker: a processor that wraps a module's own processor and only observes it.

The model's processor runs unchanged, on unchanged arguments, and its return value is the
layer's output, so a captured run is bit for bit a plain run whatever the processor does
(SDPA, IP-Adapter image keys, a fused or custom processor, the module's own ``scale``).
While it runs, forward hooks on the site's taps (for the UNet: ``to_q`` and ``to_k``) keep
a reference to the first output of each; after it returns, the family's probe forms the
probabilities from those tensors.  That is exact — they are the very projections the
processor attended with, LoRA included — and cheap: no projection is computed twice, the
only extra work is the conditional rows' QKᵀ softmax over the few text keys.

The wrapper is an ``nn.Module`` holding the original as a child, so a processor with weights
(IP-Adapter's ``to_k_ip``) stays in the model's module tree — device moves and offload hooks
still reach it — and it shows the original's call signature, because ``Attention.forward``
hands a processor only the keyword arguments its ``__call__`` names.
"""

from __future__ import annotations

import functools

import torch

from ..families.base import Call, Site


class CaptureProcessor(torch.nn.Module):
    def __init__(self, site: Site, original, capture):
        super().__init__()
        self.site = site
        self.original = original
        self.capture = capture  # the AttentionCapture that owns this processor
        self._seen: dict | None = None  # the taps' outputs while a captured call runs
        self._hooks = [tap.register_forward_hook(self._tap_hook(role)) for role, tap in site.taps.items()]

        @functools.wraps(original.__call__)
        def call(*args, **kwargs):
            return self(*args, **kwargs)

        self.__dict__["__call__"] = call  # what inspect.signature sees; calls still come here

    def _tap_hook(self, role: str):
        def hook(_module, _args, output):
            if self._seen is not None and role not in self._seen:
                self._seen[role] = output
        return hook

    def remove_hooks(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    def forward(self, attn, *args, **kwargs):
        capture = self.capture
        if capture.aggregator is None or not capture.reads(self.site):
            return self.original(attn, *args, **kwargs)
        self._seen = {}
        try:
            out = self.original(attn, *args, **kwargs)
            seen = self._seen
        finally:
            self._seen = None
        timer = capture.timer  # None outside benchmarks (bridge/attention/timer.py)
        if timer is None:
            capture.observe(self.site, Call(args, kwargs, seen))
        else:
            started = timer.start()
            capture.observe(self.site, Call(args, kwargs, seen))
            timer.stop(self.site.name, started)
        return out
