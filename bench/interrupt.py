#!/usr/bin/env python3
"""How fast a cancel (or a VJ's new prompt, or shutdown) ends a run, at the largest size the
device may run, against the time of one step and of the slowest single layer.

A cancel arrives at a random moment inside a step; the run must end before the next layer
(bridge/interrupt.py), so the latency should stay near the slowest layer's time, far below a
step's.  Per round: cancel → the run's RunEnd published.  Layer times come from timing the
gaps between consecutive interrupt points (attention modules and residual blocks) in one
uninterrupted run.  Usage:

  python bench/interrupt.py [--model builtin:tiny] [--size 0] [--rounds 12] [--steps 60]

--size 0 takes the largest side the device allows (``hello.limits``: 512 for the tiny model on a CPU).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class Ends:
    """A sink that timestamps step frames and run ends."""

    def __init__(self):
        self.cond = threading.Condition()
        self.steps: list[float] = []
        self.end: tuple[float, object] | None = None

    def on_run_start(self, start):
        with self.cond:
            self.steps, self.end = [], None

    def on_step(self, frame):
        with self.cond:
            self.steps.append(time.perf_counter())
            self.cond.notify_all()

    def on_run_end(self, end):
        with self.cond:
            self.end = (time.perf_counter(), end)
            self.cond.notify_all()


def layer_gaps(engine, request) -> tuple[list[float], float]:
    """Seconds between consecutive interrupt points during one run (the longest is the most a
    cancel can wait), and the median step time of that run."""
    from bridge.bus import Bus
    from bridge.interrupt import is_layer

    marks: list[float] = []
    modules = [m for model in (engine.family.denoiser, engine.family.vae) for m in model.modules() if is_layer(m)]
    hooks = [m.register_forward_pre_hook(lambda *_: marks.append(time.perf_counter())) for m in modules]
    ends = Ends()
    try:
        engine.generate(request, Bus([ends]))
    finally:
        for h in hooks:
            h.remove()
    gaps = [b - a for a, b in zip(marks, marks[1:])]
    steps = [b - a for a, b in zip(ends.steps, ends.steps[1:])]
    return gaps, statistics.median(steps) if steps else float("nan")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="builtin:tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, default=0, help="image side (0: the largest the device allows)")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--steps", type=int, default=60, help="steps of each run that gets cancelled")
    p.add_argument("--seed", type=int, default=0, help="seed of the random cancel moments")
    args = p.parse_args(argv)

    from bridge.bus import Bus
    from bridge.engine import Engine, GenerationRequest
    from bridge.live.runner import Runner

    engine = Engine.load(args.model, device=args.device, progress=False)
    size = args.size or int(engine.limits.width.hi)
    request = engine.validate(GenerationRequest("a red apple on a wooden table", steps=args.steps, width=size, height=size))
    print(f"{args.model} on {engine.device}, {size}×{size}, {args.steps} steps per run, {args.rounds} cancels")
    gaps, step_time = layer_gaps(engine, GenerationRequest(request.prompt, steps=3, width=size, height=size))
    print(f"one step: {step_time * 1000:.0f} ms; {len(gaps)} gaps between interrupt points in a 3-step run: "
          f"median {statistics.median(gaps) * 1000:.1f} ms, slowest layer {max(gaps) * 1000:.1f} ms")

    ends = Ends()
    runner = Runner(engine, Bus([ends]), make_request=None)
    runner.start()
    rng = random.Random(args.seed)
    latencies = []
    try:
        for _ in range(args.rounds):
            runner.submit(request)
            with ends.cond:
                ends.cond.wait_for(lambda: len(ends.steps) >= 2, 600)
            time.sleep(rng.uniform(0, step_time))  # a random moment inside a step: the experiment, not a wait
            t0 = time.perf_counter()
            runner.cancel()
            with ends.cond:
                ends.cond.wait_for(lambda: ends.end is not None, 600)
                t_end, end = ends.end
            assert end.status == "cancelled", end
            latencies.append(t_end - t0)
            runner.wait_for(lambda r: r.state == "idle", 60)
    finally:
        runner.stop()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(round(0.99 * (len(latencies) - 1))))]
    print(f"cancel → run end: p50 {statistics.median(latencies) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
          f"max {latencies[-1] * 1000:.1f} ms ({latencies[-1] / step_time:.2f} of a step, "
          f"{latencies[-1] / max(gaps):.2f} of the slowest layer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
