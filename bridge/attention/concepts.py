"""Concept maps: open-vocabulary maps of words the prompt need not contain, one per concept.

Two producers, one per kind of model, behind one interface (the engine owns one per run):

- on joint-attention transformers, **ConceptAttention** (Helbling et al., ICML 2025), in
  :mod:`bridge.families.joint_concepts`;
- on UNets, **OVAM** (Marcos-Manchón et al., CVPR 2024), here: an *attribution prompt* made of
  the concepts is encoded by the pipeline's own text encoder; at every cross-attention call
  its keys (the layer's own ``to_k`` on those states) are scored against the generation's
  image queries, softmax over the attribution prompt's 77 positions, and the maps are
  aggregated as DAAM's word maps (heads averaged, layers upsampled and summed, a concept =
  the mean of its tokens).  The generation never sees the attribution prompt.

A producer is a context manager that installs its hooks and removes them on exit, with
``set_concepts(names)`` (applies from the next step: a control may change them mid-run),
``concepts`` (the names the current step's maps are labelled with) and ``end_step()`` →
(concepts, h, w) float32 on the device, or None when no concept was asked for.
"""

from __future__ import annotations

from ..errors import InvalidRequest


def attribution_positions(tokenizer, concepts: tuple[str, ...]) -> tuple[str, tuple[tuple[int, ...], ...]]:
    """The attribution prompt (the concepts joined by spaces) and each concept's token
    positions in it, after CLIP's start token; concepts past the 77 positions are cut."""
    positions, start = [], 1
    budget = tokenizer.model_max_length - 2  # start and end tokens
    for name in concepts:
        n = len(tokenizer(name, add_special_tokens=False).input_ids)
        if start - 1 + n > budget:
            raise InvalidRequest(f"the concepts are longer than the text encoder's {budget} tokens; use fewer or shorter ones")
        positions.append(tuple(range(start, start + n)))
        start += n
    return " ".join(concepts), tuple(positions)


class ConceptSwitch:
    """The concept names a producer maps: set at any time, taken at a step boundary."""

    concepts: tuple[str, ...] = ()  # the current step's
    _next: tuple[str, ...] | None = ()  # set since the last step; None: nothing new

    def set_concepts(self, names) -> None:
        names = tuple(names)
        if names != self.concepts:
            self._next = names

    def take_next(self) -> tuple[str, ...] | None:
        """The names to switch to now (they become :attr:`concepts`), or None when unchanged."""
        names, self._next = self._next, None
        if names is not None:
            self.concepts = names
        return names


class OVAMConcepts(ConceptSwitch):
    """OVAM concept maps for a UNet family's cross-attention sites (see the module docstring)."""

    def __init__(self, family, latent_hw, map_hw, cfg: bool, device):
        self.family = family
        self.latent_hw, self.map_hw, self.cfg, self.device = tuple(latent_hw), tuple(map_hw), cfg, device
        self._aggregator = None  # an Aggregator over the attribution prompt's tokens
        self._states = None  # (1, 77, dim) attribution prompt states
        self._keys: dict[str, object] = {}  # site → its keys of the attribution prompt, this set of concepts
        self._hooks = []
        self.timer = None  # a CaptureTimer while a benchmark times the capture's own work

    def __enter__(self) -> "OVAMConcepts":
        for site in self.family.attention_sites():
            q_tap = site.taps.get("q")
            if q_tap is not None:
                self._hooks.append(q_tap.register_forward_hook(self._hook(site)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    def start_step(self) -> None:
        """Take the concepts set since the last step (encoding them costs one text encoder pass)."""
        names = self.take_next()
        if names is None:
            return
        from .aggregate import Aggregator

        self._keys = {}
        if not names:
            self._aggregator = self._states = None
            return
        prompt, positions = attribution_positions(self.family.tokenizer, names)
        self._states = self.family.text_states(prompt)
        self._aggregator = Aggregator(positions, self._states.shape[1], self.latent_hw, self.map_hw, self.cfg, self.device)

    def _hook(self, site):
        from ..families.base import Call

        def hook(module, args, q):
            agg = self._aggregator
            if agg is None:
                return
            started = self.timer.start() if self.timer else None
            keys = self._keys.get(site.name)
            if keys is None:
                keys = self._keys[site.name] = site.module.to_k(self._states.to(q.dtype))
            probs = self.family.probabilities(site, Call((), {}, {"q": q, "k": keys.expand(q.shape[0], -1, -1)}), self.cfg)
            h, w, _ = self.family.layer_geometry(probs.shape[2], self.latent_hw)
            agg.add(probs, (h, w))
            if self.timer:
                self.timer.stop("concepts (OVAM)", started)
        return hook

    def end_step(self):
        """This step's (concepts, h, w) maps, or None without concepts."""
        if self._aggregator is None:
            return None
        step, _ = self._aggregator.end_step()
        return step
