"""Spout sink (Windows): the selected word's map and the preview as named Spout senders.

Uses the optional ``SpoutGL`` package (``pip install SpoutGL``, Windows only).  Anywhere else,
or without the package, :func:`make_spout_sink` logs one line saying so and returns None, and
the bridge runs without Spout.  Senders are created on the sink's own thread, because an
OpenGL context belongs to the thread that made it.
"""

from __future__ import annotations

import importlib
import logging
import sys

import numpy as np

from ..frames import RunStart, StepFrame, normalize_maps
from .mailbox import ThreadedSink
from .selection import Selection

log = logging.getLogger(__name__)

GL_RGBA = 0x1908  # OpenGL enum; avoids a PyOpenGL dependency for one constant


def load_spout():
    """The SpoutGL module, or None with the reason logged once."""
    if sys.platform != "win32":
        log.info("Spout output is unavailable: Spout exists only on Windows (this is %s)", sys.platform)
        return None
    try:
        return importlib.import_module("SpoutGL")
    except ImportError:
        log.info("Spout output is unavailable: install it with `pip install SpoutGL` (Windows)")
        return None


def to_rgba(image: np.ndarray) -> np.ndarray:
    """(h, w) grey 0..255 or (h, w, 3) RGB → contiguous (h, w, 4) uint8 with opaque alpha."""
    img = np.asarray(image, dtype=np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    alpha = np.full(img.shape[:2] + (1,), 255, np.uint8)
    return np.ascontiguousarray(np.concatenate([img[:, :, :3], alpha], axis=2))


class SpoutSink(ThreadedSink):
    """Two senders: ``<name>-word`` (selected word's map, normalised, grey) and ``<name>-preview``."""

    name = "spout"

    def __init__(self, spout_module, sender_name: str = "daam", selection: Selection | None = None):
        self._spout = spout_module
        self.sender_name = sender_name
        self.selection = selection or Selection()
        self._senders: dict = {}
        self.frames_sent = 0
        super().__init__()

    def _sender(self, suffix: str):
        if suffix not in self._senders:
            sender = self._spout.SpoutSender()
            sender.setSenderName(f"{self.sender_name}-{suffix}")
            self._senders[suffix] = sender
        return self._senders[suffix]

    def _send(self, suffix: str, rgba: np.ndarray) -> None:
        h, w = rgba.shape[:2]
        sender = self._sender(suffix)
        # invert=False: rows are sent top-first, as Spout receivers expect from a CPU buffer
        if not sender.sendImage(rgba, w, h, GL_RGBA, False, 0):
            self._log.warning("Spout sender %s-%s refused a %dx%d frame", self.sender_name, suffix, w, h)
            return
        sender.setFrameSync(f"{self.sender_name}-{suffix}")
        self.frames_sent += 1

    def handle(self, event) -> None:
        if isinstance(event, RunStart):
            self.selection.start_run(event.run_id, event.words)
        elif isinstance(event, StepFrame):
            index = self.selection.index
            if 0 <= index < len(event.words):
                word = normalize_maps(event.maps[index:index + 1])[0]
                self._send("word", to_rgba(np.rint(word * 255.0)))
            if event.preview is not None and event.preview.size:
                self._send("preview", to_rgba(event.preview))

    def close(self) -> None:
        super().close()
        for sender in self._senders.values():
            try:
                sender.releaseSender()
            except Exception:
                pass


def make_spout_sink(sender_name: str = "daam", selection: Selection | None = None) -> SpoutSink | None:
    module = load_spout()
    return SpoutSink(module, sender_name, selection) if module is not None else None
