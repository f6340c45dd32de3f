"""The capture's own work, timed where it happens: per layer and step, off unless asked for.

The whole-run ratio (captured / plain) is noisy on a shared machine: ±8 % run to run, wider
than a 3 % target.  This measures the capture's work directly — each layer's probe after the
model's own attention, the step-end aggregation, the one host transfer — and sums it per
step.  On CUDA the intervals are CUDA events read once per step (no synchronisation inside
the step); on CPU, ``perf_counter``.  When ``Engine.capture_timer`` is None (always, outside
benchmarks) the capture never calls in here.
"""

from __future__ import annotations

import time
from collections import defaultdict


class CaptureTimer:
    def __init__(self, device: str = "cpu"):
        self.cuda = str(device).startswith("cuda")
        self.steps: list[dict[str, float]] = []  # per step: interval name → seconds
        self._open: list[tuple[str, object, object]] = []  # CUDA: (name, start event, end event)
        self._current: dict[str, float] = defaultdict(float)

    def start(self):
        if self.cuda:
            import torch

            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def stop(self, name: str, started) -> None:
        if self.cuda:
            import torch

            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._open.append((name, started, end))
        else:
            self._current[name] += time.perf_counter() - started

    def end_step(self) -> None:
        """Close the step: its intervals are summed by name and kept in :attr:`steps`."""
        if self._open:
            self._open[-1][2].synchronize()
            for name, start, end in self._open:
                self._current[name] += start.elapsed_time(end) / 1000
            self._open.clear()
        self.steps.append(dict(self._current))
        self._current.clear()

    def per_step(self) -> list[float]:
        """Seconds of capture work in each step."""
        return [sum(step.values()) for step in self.steps]
