"""Per-word statistics of a step's maps, for OSC channels and JSON step messages.

Every number is small and bounded so an OSC In CHOP can use it directly:
- ``mass``: the word's share of this step's attention over all words (sums to 1 over words);
- ``peak``: the word's maximum divided by the maximum over all words (0..1);
- ``x``, ``y``: the attention-weighted centroid in image coordinates, 0..1, origin top-left;
- ``spread``: the attention-weighted RMS distance of the pixel centres from the centroid
  (0 for a point, ~0.41 for an even map, at most ~0.71);
- ``change``: mean absolute difference of the word's peak-normalised map from the previous
  step's (0..1; 0 on the first step).
"""

from __future__ import annotations

import threading

import numpy as np

from .frames import StepFrame

STAT_NAMES = ("mass", "peak", "x", "y", "spread", "change")


def word_stats(maps: np.ndarray, mass, previous: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return (stats, normalised maps): stats is float32 (words, 6) in :data:`STAT_NAMES` order.

    Centroid and spread do not change when a map is scaled, so they come from the raw maps'
    row and column sums (marginals): a few passes over the maps, no (words, h, w) temporaries
    beyond the normalised maps that ``change`` needs anyway.
    """
    m = np.asarray(maps, dtype=np.float32)
    n, h, w = m.shape
    if n == 0:
        return np.zeros((0, len(STAT_NAMES)), np.float32), m.copy()
    peaks = m.max(axis=(1, 2))
    top = peaks.max()
    peak = peaks / top if top > 0 else np.zeros(n, np.float32)
    norm = m / np.where(peaks > 0, peaks, 1.0)[:, None, None]
    # pixel centres in 0..1, so a 1-pixel-wide map has its centroid at 0.5
    ys = (np.arange(h, dtype=np.float32) + 0.5) / h
    xs = (np.arange(w, dtype=np.float32) + 0.5) / w
    col, row = m.sum(axis=1), m.sum(axis=2)  # (n, w), (n, h)
    total = col.sum(axis=1)
    has = total > 0
    safe = np.where(has, total, 1.0)
    cx = np.where(has, col @ xs / safe, 0.5)
    cy = np.where(has, row @ ys / safe, 0.5)
    var = (col @ (xs * xs)) / safe - cx * cx + (row @ (ys * ys)) / safe - cy * cy
    spread = np.where(has, np.sqrt(np.maximum(var, 0.0)), 0.0)
    if previous is not None and previous.shape == norm.shape:
        change = np.abs(norm - previous).mean(axis=(1, 2))
    else:
        change = np.zeros(n, np.float32)
    mass_arr = np.asarray(mass, dtype=np.float32) if len(mass) == n else np.full(n, 1.0 / n, np.float32)
    stats = np.stack([mass_arr, peak, cx, cy, spread, change], axis=1).astype(np.float32)
    return stats, norm


class StatsTracker:
    """Keeps the previous step's normalised maps per run so ``change`` can be computed.

    Computes once per frame (memoised on identity) so several sinks, on their own threads,
    share one tracker and the work.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._run = None
        self._previous: np.ndarray | None = None
        self._last_frame = None
        self._last_stats: np.ndarray | None = None

    def update(self, frame: StepFrame) -> np.ndarray:
        with self._lock:
            if frame is self._last_frame:
                return self._last_stats  # type: ignore[return-value]
            if frame.run_id != self._run:
                self._run, self._previous = frame.run_id, None
            stats, norm = word_stats(frame.maps, frame.mass, self._previous)
            self._previous, self._last_frame, self._last_stats = norm, frame, stats
            return stats


def stats_dicts(stats: np.ndarray) -> list[dict]:
    """JSON form: one object per word, floats rounded to 6 digits to keep messages small."""
    return [{k: round(float(v), 6) for k, v in zip(STAT_NAMES, row)} for row in stats]
