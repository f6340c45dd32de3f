"""Progress sink: one tqdm bar per run on the terminal, closed with the run's status."""

from __future__ import annotations

from tqdm import tqdm

from ..frames import RunEnd, RunStart, StepFrame


class ProgressSink:
    def __init__(self, leave: bool = False):
        self._bar: tqdm | None = None
        self._leave = leave

    def on_run_start(self, start: RunStart) -> None:
        self.close()
        words = " ".join(start.words)
        label = words if len(words) <= 40 else words[:37] + "…"
        self._bar = tqdm(total=start.steps, desc=label, unit="step", leave=self._leave, dynamic_ncols=True)

    def on_step(self, frame: StepFrame) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(frame.phase, refresh=False)
            self._bar.update(1)

    def on_run_end(self, end: RunEnd) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(end.status)
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
