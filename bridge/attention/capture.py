"""Wrap a model family's attention processors for the length of a ``with``.

    with AttentionCapture(family, layers=("up", 16)) as capture:
        capture.begin(aggregator)      # start of a run
        pipe(...)                      # the wrapped processors feed the aggregator

The family's locator names the sites (for the UNet: every cross-attention module); each gets
a :class:`CaptureProcessor` around its own processor through the module's ``set_processor``.
Other modules are untouched.  Every original processor is put back, and every tap hook
removed, on exit, also when the run raised.  Nothing is patched globally.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from ..errors import InvalidRequest
from .aggregate import Aggregator
from .processor import CaptureProcessor

log = logging.getLogger(__name__)


def name_matches(selector: str, name: str) -> bool:
    """Whether ``selector`` is part of ``name`` starting at a dotted part and ending at a part
    boundary ("." or "_" or the end): "up" and "up_blocks.1" match "up_blocks.1.attentions.0…";
    "transformer_blocks.1" matches neither "single_transformer_blocks.1" nor "transformer_blocks.10"."""
    start = name.find(selector)
    while start >= 0:
        end = start + len(selector)
        if (start == 0 or name[start - 1] == ".") and (end == len(name) or name[end] in "._"):
            return True
        start = name.find(selector, start + 1)
    return False


class LayerFilter:
    """Which attention layers feed the maps.

    ``None`` or empty: all.  Otherwise a list of selectors, a layer is kept if any matches:
    an int (or digits) is a downsampling factor relative to the image (8, 16, 32, 64, as in
    DAAM: 8 is SD's latent resolution); a string is part of the module name, from a dotted
    part to a part boundary (:func:`name_matches`: "down", "mid", "up", "up_blocks.1",
    Flux's "single").
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

    def keeps_name(self, name: str) -> bool:
        return any(name_matches(n, name) for n in self.names)

    def keeps(self, name: str, image_factor: int) -> bool:
        if self.everything:
            return True
        return image_factor in self.factors or self.keeps_name(name)

    def check(self, family) -> None:
        """InvalidRequest (one sentence) for factors outside the family's vocabulary or names that match no layer."""
        allowed = family.layer_factors
        if self.factors - set(allowed):
            raise InvalidRequest(f"layer resolution factors must be among {', '.join(map(str, allowed))}, got {sorted(self.factors)}")
        names = [s.name for s in family.attention_sites()]
        missing = [s for s in self.names if not any(name_matches(s, n) for n in names)]
        if missing:
            raise InvalidRequest(f"no {family.attention_kind} layer matches {', '.join(missing)}; layer names look like {names[0]}")


class AttentionCapture:
    def __init__(self, family, layers=None):
        self.family = family
        self.filter = LayerFilter(layers)
        self.aggregator: Aggregator | None = None
        self.self_aggregator = None  # a SelfAggregator when the run may have query regions
        self.self_grid = None  # a SelfGrid when the run records pooled self-attention
        self._wrapped: list[tuple[object, object, CaptureProcessor]] = []
        self._by_name: dict[str, bool] = {}  # site → kept by name alone (no factor needed)
        self._geometry: dict[int, tuple[int, int, int]] = {}  # positions → (h, w, factor), this run
        self._silent: set[str] = set()  # sites already reported as giving no map
        self._batch: int | None = None  # the batch of the run's denoiser calls (its first call's)
        self.timer = None  # a CaptureTimer while a benchmark times the capture's own work
        self._passes = 0  # denoiser calls since begin(): with CFG as separate calls, every second one is unconditional
        self._pass_hook = None

    def __enter__(self) -> "AttentionCapture":
        sites = self.family.attention_sites()
        if not sites:
            raise ValueError(f"this model has no {self.family.attention_kind} layers to capture")
        sites = sites + self.family.self_attention_sites()  # read only while regions are set
        try:
            if not getattr(self.family, "cfg_in_batch", True):
                self._pass_hook = self.family.denoiser.register_forward_pre_hook(self._count_pass)
            for site in sites:
                original = site.module.processor
                wrapper = CaptureProcessor(site, original, self)
                self._wrapped.append((site.module, original, wrapper))
                site.module.set_processor(wrapper)
                self._by_name[site.name] = self.filter.everything or self.filter.keeps_name(site.name)
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.aggregator = self.self_aggregator = self.self_grid = None
        self._restore()

    def _count_pass(self, _module, _args) -> None:
        self._passes += 1

    def _restore(self) -> None:
        if self._pass_hook is not None:
            self._pass_hook.remove()
            self._pass_hook = None
        while self._wrapped:
            module, original, wrapper = self._wrapped.pop()
            wrapper.remove_hooks()
            module.set_processor(original)
        self._by_name.clear()

    def begin(self, aggregator: Aggregator, self_aggregator=None, self_grid=None) -> None:
        """Feed ``aggregator`` (and ``self_aggregator``'s regions, when it has any, and
        ``self_grid``) from now on (a run can be stopped mid-step: bridge/interrupt.py)."""
        self.aggregator, self.self_aggregator, self.self_grid = aggregator, self_aggregator, self_grid
        self._geometry = {}
        self._batch = None
        self._passes = 0

    def reads(self, site) -> bool:
        """Whether a call of ``site`` may feed the maps (False: its processor just runs)."""
        if site.kind == "self" and not self._self_active:
            return False
        if self._pass_hook is not None and self.aggregator.cfg and self._passes % 2 == 0:
            return False  # the unconditional call of true CFG: the conditional one came first
        return self._by_name.get(site.name, False) or bool(self.filter.factors)

    @property
    def _regions_active(self) -> bool:
        return self.self_aggregator is not None and self.self_aggregator.active

    @property
    def _self_active(self) -> bool:  # some self-attention map is asked for: regions or the grid
        return self._regions_active or self.self_grid is not None

    def observe(self, site, call) -> None:
        """One call's taps → probabilities → the aggregator, if the layer passes the filter."""
        aggregator = self.aggregator
        batch = next((t.shape[0] for t in call.taps.values()), None)
        if self._batch is None:
            self._batch = batch
        elif batch is not None and batch != self._batch:
            # another pass in the same step: SD3's skip-layer guidance reruns the denoiser on
            # the conditional half alone; its rows are neither the CFG pair nor the model's plain pass
            return
        if site.kind == "self":
            return self._observe_self(site, call)
        if site.kind == "joint" and self._self_active:
            self._observe_self(site, call)
        probs = self.family.probabilities(site, call, aggregator.cfg)
        if probs is None:
            if site.name not in self._silent:
                self._silent.add(site.name)
                log.warning("%s: its processor did not use the projections the capture reads; this layer gives no map", site.name)
            return
        n = probs.shape[2]
        geometry = self._geometry.get(n)
        if geometry is None:  # fail early on a layer that fits no map of this latent
            geometry = self._geometry[n] = self.family.layer_geometry(n, aggregator.latent_hw)
        h, w, factor = geometry
        if self._by_name[site.name] or factor in self.filter.factors:
            aggregator.add(probs, (h, w))

    def _observe_self(self, site, call) -> None:
        """A self-attention call: only the rows the regions cover, if the layer passes the filter."""
        n = self.family.image_positions(site, call)
        if n is None:
            return
        tap = call.taps.get("q", call.taps.get("qkv"))
        geometry = self._geometry.get(n)
        if geometry is None:
            geometry = self._geometry[n] = self.family.layer_geometry(n, self.aggregator.latent_hw)
        h, w, factor = geometry
        if not (self._by_name[site.name] or factor in self.filter.factors):
            return
        cfg = self.aggregator.cfg
        if self._regions_active:
            agg = self.self_aggregator
            probs = self.family.self_probabilities(site, call, cfg, agg.rows(h, w))
            if probs is not None:
                agg.add(probs, (h, w))
        if self.self_grid is not None:
            rows = self.family.conditional_rows(tap.shape[0], cfg)
            images = len(range(tap.shape[0])[rows])
            self.self_grid.add(lambda r: self.family.self_probabilities(site, call, cfg, r), (h, w),
                               images * getattr(site.module, "heads", 1))
