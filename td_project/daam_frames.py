"""Decode the bridge's binary frames (docs/PROTOCOL.md §1.1) into TouchDesigner textures.

Loaded into a Text DAT named ``daam_frames`` by build_network.py; the WebSocket DAT callbacks
reach it as ``comp.op('daam_frames').module``.  numpy and the standard library only, so it runs
in TouchDesigner's own Python and in the tests alike.

TouchDesigner textures start at the bottom row while the wire sends row 0 at the top, so every
texture made here is flipped vertically before Script TOP's copyNumpyArray.
"""

import struct

import numpy as np

HEADER = struct.Struct("<4sBBBBIIIIIII")  # magic, version, type, dtype, reserved, run, step, total, first_word, shape×3
# Frame type code → name: the bridge's map kinds (bridge/mapkinds.py; a test keeps this copy
# equal to that table), then the two images.
MAP_TYPES = {1: "maps", 2: "cumulative", 5: "self", 6: "selfgrid", 7: "concepts"}
IMAGE_TYPES = {3: "preview", 4: "final"}
TYPES = {**MAP_TYPES, **IMAGE_TYPES}
DTYPES = {1: np.dtype("<u1"), 2: np.dtype("<f2"), 3: np.dtype("<f4")}


class FrameError(ValueError):
    """A binary message that is not a version-1 frame; the message says why."""


def decode(buf) -> dict:
    """One binary frame → dict(type, run, step, total, first_word, data) with data shaped as sent."""
    buf = bytes(buf)
    if len(buf) < HEADER.size:
        raise FrameError(f"binary frame of {len(buf)} bytes is shorter than the {HEADER.size}-byte header")
    magic, version, ftype, dtype, _, run, step, total, first, *shape = HEADER.unpack_from(buf)
    if magic != b"DAAM" or version != 1:
        raise FrameError("binary message is not a DAAM version-1 frame")
    if dtype not in DTYPES:
        raise FrameError(f"binary frame has unknown dtype code {dtype}")
    count = shape[0] * shape[1] * shape[2]
    need = HEADER.size + count * DTYPES[dtype].itemsize
    if len(buf) < need:
        raise FrameError(f"binary frame holds {len(buf)} bytes, its shape needs {need}")
    data = np.frombuffer(buf, DTYPES[dtype], count, HEADER.size).reshape(shape)
    return {"type": TYPES.get(ftype, ftype), "run": run, "step": step, "total": total, "first_word": first, "data": data}


def map_texture(maps: np.ndarray, index: int = 0) -> np.ndarray:
    """One word's map → (h, w, 4) float32 in 0..1, bottom row first (r = g = b = attention, a = 1).

    uint8 maps are already normalised per word by the bridge; float maps are scaled by their peak.
    An index past the last map gives the last one (a Concept parameter ahead of the bridge's concepts).
    """
    m = np.asarray(maps[max(0, min(int(index), len(maps) - 1))])
    if m.dtype == np.uint8:
        unit = m.astype(np.float32) / 255.0
    else:
        unit = m.astype(np.float32)
        peak = float(unit.max()) if unit.size else 0.0
        unit = unit / peak if peak > 0 else np.zeros_like(unit)
    unit = np.flipud(unit)
    rgba = np.empty(unit.shape + (4,), np.float32)
    rgba[..., 0] = rgba[..., 1] = rgba[..., 2] = unit
    rgba[..., 3] = 1.0
    return rgba


def image_texture(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB, row 0 at the top → (H, W, 4) uint8 RGBA, bottom row first."""
    rgb = np.asarray(rgb, np.uint8)
    rgba = np.empty(rgb.shape[:2] + (4,), np.uint8)
    rgba[..., :3] = np.flipud(rgb)
    rgba[..., 3] = 255
    return rgba


def grid_homes(side: int, seed: int = 0) -> np.ndarray:
    """Particle homes on a jittered side × side grid (docs/PARTICLES.md), as an RGBA32F texture.

    Texel (x, y) holds particle y·side + x: positions are data, so no flip.  The layout matches
    bridge.particles.grid_homes for a square count.
    """
    idx = np.arange(side * side)
    cell = np.stack([idx % side, idx // side], axis=1).astype(np.float64)
    jitter = np.random.default_rng(seed).random((side * side, 2))
    homes = ((cell + jitter) / side).astype(np.float32)
    tex = np.zeros((side, side, 4), np.float32)
    tex[..., :2] = homes.reshape(side, side, 2)
    return tex


def scattered_state(side: int, seed: int = 1) -> np.ndarray:
    """Initial particle state: uniform random positions, zero velocity (RGBA32F: pos.xy, vel.xy)."""
    tex = np.zeros((side, side, 4), np.float32)
    tex[..., :2] = np.random.default_rng(seed).random((side, side, 2)).astype(np.float32)
    return tex
