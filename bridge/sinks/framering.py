"""Step frames from the generation process to the wire process without pickling their arrays.

A ring of shared-memory slots, owned by the sending process.  :meth:`FrameRing.put` copies a
:class:`~bridge.frames.StepFrame`'s arrays (its map kinds and preview) into a free slot and
returns a small header (the other fields, and where each array lies); the receiver rebuilds
the frame with :func:`take` — one copy out of the slot — and hands the slot back
(:meth:`FrameRing.release`).  When every slot is still held, :meth:`put` returns None at once:
the sender never waits for the wire (newest step wins, as for a slow client).

A slot that is too small for a frame is replaced by a bigger one under a new name; the
receiver opens slots by name and closes those it no longer sees.
"""

from __future__ import annotations

import dataclasses
import threading
from multiprocessing import shared_memory

import numpy as np

from ..frames import StepFrame

SLOTS = 4  # frames in flight between the processes: the wire is at most this many steps behind
ALIGN = 64  # array offsets, so that a copy out of a slot is aligned


def _split(frame: StepFrame) -> tuple[list, dict]:
    """A frame's arrays as (place, array) — place ("kinds", name) or (field,) — and its other fields."""
    arrays = [(("kinds", name), np.ascontiguousarray(array)) for name, array in frame.kinds.items()]
    plain = {}
    for f in dataclasses.fields(StepFrame):
        value = getattr(frame, f.name)
        if isinstance(value, np.ndarray):
            arrays.append(((f.name,), np.ascontiguousarray(value)))
        elif f.name != "kinds":
            plain[f.name] = value
    return arrays, plain


class FrameRing:
    """The sender's side: slots of shared memory, each free or held by the receiver."""

    def __init__(self, slots: int = SLOTS):
        self._slots: list[shared_memory.SharedMemory | None] = [None] * slots
        self._free = list(range(slots))
        self._lock = threading.Lock()
        self.skipped = 0  # frames not sent because every slot was held

    def put(self, frame: StepFrame) -> dict | None:
        arrays, plain = _split(frame)
        layout, size = [], 0
        for place, array in arrays:
            layout.append((place, array.dtype.str, array.shape, size))
            size += -(-array.nbytes // ALIGN) * ALIGN
        with self._lock:
            if not self._free:
                self.skipped += 1
                return None
            index = self._free.pop()
        shm = self._slots[index]
        if shm is None or shm.size < size:
            if shm is not None:
                shm.close()
                shm.unlink()
            shm = self._slots[index] = shared_memory.SharedMemory(create=True, size=max(size, 1 << 16) * 2)
        for (place, dtype, shape, offset), (_, array) in zip(layout, arrays):
            np.ndarray(shape, dtype, buffer=shm.buf, offset=offset)[...] = array
        return {"slot": index, "name": shm.name, "layout": layout, "fields": plain}

    def release(self, index: int) -> None:
        with self._lock:
            if index not in self._free:
                self._free.append(index)

    def close(self) -> None:
        for shm in self._slots:
            if shm is not None:
                shm.close()
                shm.unlink()
        self._slots = [None] * len(self._slots)


class RingReader:
    """The receiver's side: open slots by name, copy frames out."""

    def __init__(self):
        self._open: dict[int, shared_memory.SharedMemory] = {}

    def take(self, header: dict) -> StepFrame:
        index, name = header["slot"], header["name"]
        shm = self._open.get(index)
        if shm is None or shm.name != name:
            if shm is not None:
                shm.close()
            shm = self._open[index] = shared_memory.SharedMemory(name=name)
        kinds, fields = {}, dict(header["fields"])
        for place, dtype, shape, offset in header["layout"]:
            array = np.ndarray(shape, dtype, buffer=shm.buf, offset=offset).copy()
            if place[0] == "kinds":
                kinds[place[1]] = array
            else:
                fields[place[0]] = array
        return StepFrame(**fields, kinds=kinds)

    def close(self) -> None:
        for shm in self._open.values():
            shm.close()
        self._open.clear()
