"""Map kinds: the one table of the attention maps a step record carries.

A step record (:class:`bridge.frames.StepFrame`) holds its maps in ``frame.kinds``, a mapping
from a kind's name to a numpy array whose first axis is indexed by the kind's labels (the
run's words for the word maps).  Everything that moves or draws maps — the wire
(:mod:`bridge.protocol`), the recording (:mod:`bridge.recording`), replay, the browser viewer,
TouchDesigner, timelapse and export — reads this table instead of naming kinds itself.

Adding a kind is one row in :data:`KINDS` plus its producer (the code that puts the array into
``StepFrame.kinds``; for the engine, the dict given to :func:`bridge.transfer.to_host`).

Light module: numpy only, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .frames import normalize_maps


@dataclass(frozen=True)
class MapKind:
    name: str  # key in StepFrame.kinds, name in a `subscribe` message's "frames"
    code: int  # binary frame type on the wire (docs/PROTOCOL.md §1.1); 3 and 4 are the images
    folder: str  # recording sub-folder holding one <step>.npy per step (docs/RECORDING.md)
    labels: str = "words"  # what indexes the first axis: "words" (RunStart.words), "regions", "cells", "concepts" (StepFrame.concepts)
    dtype: str = "float16"  # as held in the record and stored on disk
    normalization: str = "peak"  # how uint8 frames and pictures bring each label's map to 0..1
    option: str = ""  # its name for `timelapse --map` (default: name)
    summary: str = ""  # file that keeps the last step's array when the run ends ("" for none)
    description: str = ""
    streamed: bool = True  # sent to websocket clients that do not name their frames (False: only when subscribed)

    @property
    def cli_name(self) -> str:
        return self.option or self.name


# Each row is one kind.  Codes are part of protocol version 1: never reuse or renumber one.
KINDS: dict[str, MapKind] = {
    k.name: k
    for k in (
        MapKind("maps", 1, "maps", option="step",
                description="this step's DAAM map per word (unnormalised, ≥ 0)"),
        MapKind("cumulative", 2, "cumulative", summary="daam.npy",
                description="sum of the step maps over steps 0..n: the DAAM map so far"),
        MapKind("self", 5, "self", labels="regions",
                description="this step's self-attention of each query region: where its pixels look (DAAM-I2I)"),
        MapKind("selfgrid", 6, "selfgrid", labels="cells", streamed=False,
                description="this step's self-attention pooled to a coarse grid, one map per cell: regions "
                            "chosen after the run and diffused attention (bridge/selfgrid.py)"),
        MapKind("concepts", 7, "concepts", labels="concepts",
                description="this step's map of each concept, any word (ConceptAttention on transformers, "
                            "OVAM on UNets): where the model puts it"),
    )
}

# The kinds a version-1 recording holds when its index line does not list them.
V1_KINDS = ("maps", "cumulative")

# How each normalisation brings an array (labels, h, w) to float32 in 0..1.
NORMALIZERS = {
    "peak": normalize_maps,  # each label's map divided by its own maximum (DAAM)
}


def kinds() -> tuple[MapKind, ...]:
    """Every kind, in wire-code order (the order a step's map frames are sent in)."""
    return tuple(sorted(KINDS.values(), key=lambda k: k.code))


def get(name: str) -> MapKind:
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"unknown map kind {name!r}; known: {', '.join(KINDS)}") from None


def by_code(code: int) -> MapKind | None:
    return next((k for k in KINDS.values() if k.code == code), None)


def by_cli_name(option: str) -> MapKind:
    for k in KINDS.values():
        if k.cli_name == option:
            return k
    raise KeyError(f"unknown map kind {option!r}; choose one of {', '.join(k.cli_name for k in kinds())}")


def normalize(kind: MapKind | str, array: np.ndarray) -> np.ndarray:
    """``array`` of ``kind`` as float32 0..1 per label, by the kind's normalisation."""
    kind = get(kind) if isinstance(kind, str) else kind
    return NORMALIZERS[kind.normalization](array)


def as_stored(kind: MapKind | str, array) -> np.ndarray:
    """``array`` in the kind's dtype, C-contiguous (what records hold and recordings store)."""
    kind = get(kind) if isinstance(kind, str) else kind
    return np.ascontiguousarray(array, dtype=np.dtype(kind.dtype))


def describe() -> list[dict]:
    """The table as JSON, for the ``hello`` message: clients map frame type codes with it."""
    return [{"name": k.name, "code": k.code, "labels": k.labels, "normalization": k.normalization,
             "streamed": k.streamed, "description": k.description} for k in kinds()]
