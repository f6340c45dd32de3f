"""The records that flow from a source (engine or replay) to every sink.

Three kinds, in this order for every run: one ``RunStart``, zero or more ``StepFrame`` and one
``RunEnd``.  Everything downstream of these must not know whether they came from a GPU or a
file: a recording stores every field a sink may send, bit for bit, so replay is byte-identical.

Arrays are numpy, already on the host:
- ``kinds``: the step's attention maps by kind name (the table is bridge/mapkinds.py).  Today
  ``"maps"`` and ``"cumulative"``: float16, shape (words, map_h, map_w), ≥ 0, unnormalised
  (DAAM sums over heads and layers; cumulative = running sum over steps), also reachable as
  ``frame.maps`` / ``frame.cumulative``.  Sinks that need 0..1 call :func:`normalize_maps`.
- ``preview``: uint8 RGB, shape (height, width, 3).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from .phases import PhaseSchedule


@dataclass(frozen=True)
class RunStart:
    run_id: str
    prompt: str
    negative_prompt: str
    seed: int
    steps: int
    guidance: float
    width: int
    height: int
    map_size: tuple[int, int]  # (h, w)
    words: tuple[str, ...]
    word_token_indices: tuple[tuple[int, ...], ...]  # token positions (in the encoder sequence) per word
    dropped_words: tuple[str, ...]  # words cut off by the encoder's token limit
    model: str
    scheduler: str
    phases: PhaseSchedule = field(default_factory=PhaseSchedule)
    extra: dict = field(default_factory=dict)  # free-form, JSON-serialisable (package versions, device …)


@dataclass(frozen=True, eq=False, init=False)
class StepFrame:
    run_id: str
    step: int  # 0-based
    total: int
    timestep: float
    phase: str
    phase_weights: tuple[float, float, float]  # (noise, structure, detail), sums to 1
    words: tuple[str, ...]
    kinds: Mapping[str, np.ndarray]  # map kind name → array (labels, h, w); see bridge/mapkinds.py
    mass: tuple[float, ...]  # per-word share of this step's attention over the words, sums to 1
    preview: np.ndarray  # uint8 (H, W, 3)
    elapsed: float  # seconds since the run started, at the end of this step
    timings: dict = field(default_factory=dict)  # e.g. {"step": s, "capture": s, "preview": s}
    regions: tuple = ()  # the query regions labelling kinds["self"] ({"id", shape: coords}, bridge/regions.py)
    concepts: tuple = ()  # the concept names labelling kinds["concepts"], in their order

    # The word maps keep their positional places, so records read as they always did:
    # StepFrame(run, step, total, timestep, phase, weights, words, maps, cumulative, mass, preview, elapsed).
    def __init__(self, run_id, step, total, timestep, phase, phase_weights, words, maps=None, cumulative=None,
                 mass=(), preview=None, elapsed=0.0, timings=None, *, kinds=None, regions=(), concepts=()):
        merged = dict(kinds or {})
        for name, array in (("maps", maps), ("cumulative", cumulative)):
            if array is not None:
                merged[name] = array
        for name, value in (("run_id", run_id), ("step", step), ("total", total), ("timestep", timestep),
                            ("phase", phase), ("phase_weights", phase_weights), ("words", words),
                            ("kinds", MappingProxyType(merged)), ("mass", mass), ("preview", preview),
                            ("elapsed", elapsed), ("timings", {} if timings is None else timings),
                            ("regions", tuple(regions)), ("concepts", tuple(concepts))):
            object.__setattr__(self, name, value)

    @property
    def maps(self) -> np.ndarray:
        """float16 (W, h, w): this step's per-word maps (``kinds["maps"]``)."""
        return self.kinds["maps"]

    @property
    def cumulative(self) -> np.ndarray:
        """float16 (W, h, w): sum of maps over steps 0..step (``kinds["cumulative"]``)."""
        return self.kinds["cumulative"]


@dataclass(frozen=True, eq=False)
class RunEnd:
    run_id: str
    status: str  # "completed" | "cancelled" | "failed"
    steps_done: int
    elapsed: float
    image: np.ndarray | None = None  # uint8 (H, W, 3) final image, when completed
    error: str = ""


Event = RunStart | StepFrame | RunEnd


def normalize_maps(maps: np.ndarray) -> np.ndarray:
    """Scale each word's map to 0..1 by its own maximum (DAAM's normalisation), float32."""
    m = np.asarray(maps, dtype=np.float32)
    peak = m.reshape(m.shape[0], -1).max(axis=1) if m.size else np.zeros(0, np.float32)
    peak = np.where(peak > 0, peak, 1.0).astype(np.float32)
    return m / peak[:, None, None]


def attention_mass(maps: np.ndarray) -> tuple[float, ...]:
    """Each word's share of the total attention over all words in ``maps`` (sums to 1)."""
    sums = np.asarray(maps, dtype=np.float64).reshape(maps.shape[0], -1).sum(axis=1)
    total = sums.sum()
    if total <= 0:
        return tuple(1.0 / len(sums) for _ in sums) if len(sums) else ()
    return tuple(float(x) for x in sums / total)
