"""The wire protocol, version 1 (docs/PROTOCOL.md): pure encode/decode, no I/O, no torch.

Like the ``websockets`` library splits its protocol state machine from its network code, this
module only turns records into bytes/str and back.  The websocket sink, the replay command and
the tests all share it, so live and replay put identical bytes on the wire.

Server → client messages are either
- a binary frame: a fixed 36-byte little-endian header (:data:`HEADER`) then raw array bytes
  (one per map kind of :mod:`bridge.mapkinds`, preview RGB8, final RGB8), or
- a JSON text frame with a ``"type"`` key (hello, run_start, step, run_end, status, error).

Client → server messages are JSON control messages (see :mod:`bridge.control` for their
validation); :class:`Subscription` is the one a client uses to choose what it receives.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from . import mapkinds
from .frames import RunEnd, RunStart, StepFrame
from .limits import LIMITS
from .wiretext import MAX_DEPTH, clip, find_unencodable, quote
from .wordpick import focus_index

PROTOCOL_VERSION = 1
MAGIC = b"DAAM"

# magic, version, type, dtype, reserved, run, step, total, first_word, shape[0..2]
HEADER = struct.Struct("<4sBBBBIIIIIII")
HEADER_SIZE = HEADER.size  # 36: keeps float32 payloads 4-byte aligned in a fresh buffer

# Binary frame types: the images are fixed here; every map kind brings its own code
# (bridge/mapkinds.py), so a new kind needs no change in this module.
MAPS = mapkinds.KINDS["maps"].code  # this step's per-word maps, shape (words, h, w)
CUMULATIVE = mapkinds.KINDS["cumulative"].code  # running sum of maps over steps 0..step
PREVIEW = 3  # this step's preview image, uint8 RGB, shape (H, W, 3)
FINAL = 4  # the finished image, uint8 RGB, shape (H, W, 3); step = steps done
IMAGE_TYPES = {"preview": PREVIEW, "final": FINAL}


def frame_types() -> dict[str, int]:
    """Every binary frame type, name → code: the map kinds in code order, then the images."""
    return {**{k.name: k.code for k in mapkinds.kinds()}, **IMAGE_TYPES}


def default_frames() -> tuple[str, ...]:
    """What a client that names no frames gets: every streamed kind (selfgrid only on request) and the images."""
    return tuple(name for name in frame_types() if name in IMAGE_TYPES or mapkinds.get(name).streamed)


def frame_type_name(code: int) -> str:
    kind = mapkinds.by_code(code)
    if kind is not None:
        return kind.name
    return next((name for name, c in IMAGE_TYPES.items() if c == code), f"type{code}")

# Payload dtypes (always little-endian).
UINT8 = 1
FLOAT16 = 2
FLOAT32 = 3

DTYPES = {"uint8": UINT8, "float16": FLOAT16, "float32": FLOAT32}
NUMPY_DTYPES = {UINT8: np.dtype("<u1"), FLOAT16: np.dtype("<f2"), FLOAT32: np.dtype("<f4")}

JSON_TYPES = ("hello", "run_start", "step", "run_end", "status", "error")


class ProtocolError(ValueError):
    """Bytes or text that are not a valid version-1 message."""


def run_code(run_id: str) -> int:
    """The 32-bit ``run`` header field: crc32 of the run id, identical in live and replay."""
    return zlib.crc32(run_id.encode("utf-8")) & 0xFFFFFFFF


# --------------------------------------------------------------------------- binary frames


@dataclass(frozen=True, eq=False)
class Frame:
    """A decoded binary frame."""

    type: int
    dtype: int
    run: int
    step: int
    total: int
    first_word: int
    data: np.ndarray  # shape from the header, dtype from the header

    @property
    def type_name(self) -> str:
        return frame_type_name(self.type)


def encode_frame(ftype: int, array: np.ndarray, *, run: int, step: int, total: int, first_word: int = 0) -> bytes:
    """Header + raw bytes.  ``array`` must be uint8, float16 or float32 with at most 3 dims."""
    a = np.asarray(array)
    code = {np.dtype(np.uint8): UINT8, np.dtype(np.float16): FLOAT16, np.dtype(np.float32): FLOAT32}.get(a.dtype)
    if code is None:
        raise ProtocolError(f"cannot send dtype {a.dtype}; use uint8, float16 or float32")
    if a.ndim > 3:
        raise ProtocolError(f"frames carry at most 3 dimensions, got shape {a.shape}")
    shape = (1,) * (3 - a.ndim) + tuple(a.shape)
    header = HEADER.pack(MAGIC, PROTOCOL_VERSION, ftype, code, 0, run, step, total, first_word, *shape)
    return header + np.ascontiguousarray(a, dtype=NUMPY_DTYPES[code]).tobytes()


def decode_frame(data: bytes | bytearray | memoryview) -> Frame:
    """Parse one binary frame; raises :class:`ProtocolError` on anything malformed."""
    buf = memoryview(data)
    if len(buf) < HEADER_SIZE:
        raise ProtocolError(f"frame of {len(buf)} bytes is shorter than the {HEADER_SIZE}-byte header")
    magic, version, ftype, dtype, _reserved, run, step, total, first, *shape = HEADER.unpack_from(buf)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {version} is not supported (this is version {PROTOCOL_VERSION})")
    if dtype not in NUMPY_DTYPES:
        raise ProtocolError(f"unknown dtype code {dtype}")
    np_dtype = NUMPY_DTYPES[dtype]
    expected = math.prod(shape) * np_dtype.itemsize
    if len(buf) - HEADER_SIZE != expected:
        raise ProtocolError(f"payload is {len(buf) - HEADER_SIZE} bytes, header says {expected} for shape {tuple(shape)}")
    array = np.frombuffer(buf, dtype=np_dtype, offset=HEADER_SIZE).reshape(shape)
    return Frame(ftype, dtype, run, step, total, first, array)


def convert_maps(maps: np.ndarray, dtype: int, kind: str = "maps") -> np.ndarray:
    """Maps as sent in ``dtype``: uint8 is each label's map brought to 0..1 by the kind's
    normalisation (for word maps: its own peak) × 255, rounded; float16/float32 are the raw values."""
    if dtype == UINT8:
        return np.rint(mapkinds.normalize(kind, maps) * 255.0).clip(0, 255).astype(np.uint8)
    return np.asarray(maps, dtype=NUMPY_DTYPES[dtype])


# --------------------------------------------------------------------------- JSON messages


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None  # JSON has no NaN/inf; null is explicit


def hello_message(*, server: str, presets: list[str], preset: str, subscription: "Subscription", extra: dict | None = None,
                  limits=LIMITS) -> dict:
    """``limits``: the table's, with the sides the loaded model's device can run (live)."""
    return {"type": "hello", "protocol": PROTOCOL_VERSION, "server": server, "presets": list(presets),
            "preset": preset, "subscription": subscription.to_dict(), "limits": limits.to_dict(),
            "map_kinds": mapkinds.describe(), **(extra or {})}


def run_start_message(start: RunStart) -> dict:
    return {
        "type": "run_start",
        "run": run_code(start.run_id),
        "run_id": start.run_id,
        "prompt": start.prompt,
        "negative_prompt": start.negative_prompt,
        "seed": start.seed,
        "steps": start.steps,
        "guidance": _finite(start.guidance),
        "width": start.width,
        "height": start.height,
        "map_size": list(start.map_size),
        "words": list(start.words),
        "dropped_words": list(start.dropped_words),
        "model": start.model,
        "scheduler": start.scheduler,
        "phases": start.phases.to_dict(),
        "focus": focus_index(start.words),
    }


def step_message(frame: StepFrame, stats: list[dict] | None = None) -> dict:
    """Per-step metadata.  ``stats`` (see :mod:`bridge.wordstats`) adds per-word statistics."""
    msg = {
        "type": "step",
        "run": run_code(frame.run_id),
        "run_id": frame.run_id,
        "step": frame.step,
        "total": frame.total,
        "timestep": _finite(frame.timestep),
        "phase": frame.phase,
        "phase_weights": [float(w) for w in frame.phase_weights],
        "mass": [float(m) for m in frame.mass],
    }
    if frame.regions:  # the labels of this step's "self" maps, in their order
        msg["regions"] = list(frame.regions)
    if frame.concepts:  # the labels of this step's "concepts" maps, in their order
        msg["concepts"] = list(frame.concepts)
    if stats is not None:
        msg["stats"] = stats
    return msg


def run_end_message(end: RunEnd) -> dict:
    return {"type": "run_end", "run": run_code(end.run_id), "run_id": end.run_id, "status": end.status,
            "steps_done": end.steps_done, "error": end.error}


def error_message(code: str, message: str, **detail) -> dict:
    """``code`` is a stable machine-readable word; ``message`` one human sentence (clipped, so
    no sender's value comes back at length)."""
    return {"type": "error", "code": code, "message": clip(message), **detail}


def status_message(**fields) -> dict:
    return {"type": "status", **fields}


def encode_json(message: dict) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def decode_json(text: str | bytes) -> dict:
    """Parse one JSON text frame into a dict with a string ``type``; :class:`ProtocolError` otherwise."""
    try:
        msg = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError(f"not accepted: it is nested more than {MAX_DEPTH} levels deep") from None
    problem = find_unencodable(msg)
    if problem:
        raise ProtocolError(f"not accepted: {problem}")
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError('a JSON message must be an object with a string "type"')
    return msg


def decode_message(data: bytes | str) -> Frame | dict:
    """Client side: a binary frame → :class:`Frame`, a text frame → dict."""
    return decode_frame(data) if isinstance(data, (bytes, bytearray, memoryview)) else decode_json(data)


# --------------------------------------------------------------------------- subscriptions


@dataclass(frozen=True)
class Subscription:
    """What one client receives.

    ``frames``: binary frame types by name; ``words``: "all", "selected" (the server-wide
    selected word, follows `select` controls) or one word index; ``dtype`` for maps
    (previews are always uint8); ``meta``: whether JSON step messages are sent.
    A TouchDesigner Script TOP wants ``frames=("maps",), words="selected", dtype="uint8",
    meta=False``: exactly one binary texture per step.
    """

    frames: tuple[str, ...] = field(default_factory=lambda: default_frames())  # every streamed kind and image
    words: str | int = "all"
    dtype: str = "uint8"
    meta: bool = True

    def to_dict(self) -> dict:
        return {"frames": list(self.frames), "words": self.words, "dtype": self.dtype, "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict, base: "Subscription | None" = None) -> "Subscription":
        """Build from a ``subscribe`` message; keys left out keep ``base``'s values.
        Raises :class:`ProtocolError` with one sentence naming the bad field."""
        base = base or cls()
        unknown = set(d) - {"type", "frames", "words", "dtype", "meta"}
        if unknown:
            names = ", ".join(quote(k) for k in sorted(unknown)[:3])
            raise ProtocolError(f"subscribe has unknown field(s) {names}; known: frames, words, dtype, meta")
        frames = d.get("frames", list(base.frames))
        if isinstance(frames, str):
            frames = [f for f in frames.split(",") if f]
        if not isinstance(frames, (list, tuple)) or not all(isinstance(f, str) for f in frames):
            raise ProtocolError(f'subscribe "frames" must be a list of names: {", ".join(frame_types())}')
        bad = [f for f in frames if f not in frame_types()]
        if bad:
            names = ", ".join(quote(f) for f in bad[:3])
            raise ProtocolError(f"subscribe \"frames\" has unknown type(s) {names}; choose from {', '.join(frame_types())}")
        words = d.get("words", base.words)
        if isinstance(words, bool) or not (words in ("all", "selected") or (isinstance(words, int) and 0 <= words < 100000)):
            raise ProtocolError('subscribe "words" must be "all", "selected" or a word index ≥ 0')
        dtype = d.get("dtype", base.dtype)
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise ProtocolError(f'subscribe "dtype" must be one of {", ".join(DTYPES)}, got {quote(dtype)}')
        meta = d.get("meta", base.meta)
        if not isinstance(meta, bool):
            raise ProtocolError('subscribe "meta" must be true or false')
        return cls(tuple(dict.fromkeys(frames)), words, dtype, meta)


class FrameEncoder:
    """Turns records into wire messages for subscriptions, encoding each variant once.

    Many clients share few subscriptions, so encodings of one event are memoised per
    (frame type, dtype, word slice) until the next event arrives.
    """

    def __init__(self):
        self._event_key = None
        self._cache: dict = {}

    def _memo(self, event, key, make):
        if self._event_key is not event:
            self._event_key, self._cache = event, {}
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @staticmethod
    def word_slice(sub: Subscription, selected: int, n_words: int) -> tuple[int, int] | None:
        """(first, count) of the words this subscription gets, or None if its word is absent."""
        if n_words == 0:
            return None
        if sub.words == "all":
            return (0, n_words)
        index = selected if sub.words == "selected" else int(sub.words)
        return (index, 1) if 0 <= index < n_words else None

    def step_frames(self, frame: StepFrame, sub: Subscription, selected: int = 0) -> list[bytes]:
        """The binary frames for one step in a fixed order: the map kinds by code, then the preview.

        Word-labelled kinds send the subscription's words; kinds with other labels send all."""
        out: list[bytes] = []
        run = run_code(frame.run_id)
        word_slice = self.word_slice(sub, selected, len(frame.words))
        dtype = DTYPES[sub.dtype]
        for kind in mapkinds.kinds():
            source = frame.kinds.get(kind.name)
            sl = word_slice if kind.labels == "words" else (0, len(source) if source is not None else 0)
            if kind.name in sub.frames and source is not None and sl is not None:
                first, count = sl
                out.append(self._memo(frame, (kind.name, dtype, first, count), lambda source=source, kind=kind: encode_frame(
                    kind.code, convert_maps(source[first:first + count], dtype, kind.name),
                    run=run, step=frame.step, total=frame.total, first_word=first)))
        if "preview" in sub.frames and frame.preview is not None and frame.preview.size:
            out.append(self._memo(frame, ("preview",), lambda: encode_frame(
                PREVIEW, frame.preview, run=run, step=frame.step, total=frame.total)))
        return out

    def final_frame(self, end: RunEnd, total: int, sub: Subscription) -> bytes | None:
        if "final" not in sub.frames or end.image is None:
            return None
        return self._memo(end, ("final",), lambda: encode_frame(
            FINAL, end.image, run=run_code(end.run_id), step=end.steps_done, total=total))
