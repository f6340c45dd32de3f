#!/usr/bin/env python3
"""Live wire latency and fan-out cost, measured side by side in one run.

  latency   step end (the engine publishes the StepFrame) → the step's last byte handed to
            the socket, per websocket client and for OSC: p50 / p99
  bytes     bytes per step per websocket client (default subscription: uint8 maps,
            cumulative maps, preview, JSON step metadata) and per OSC target
  interrupt VJ mode: a new prompt arrives mid-run → the new run's first step frame is
            published; compared with one step time (the target: within one step plus warm-up)
  fan-out   generation steps/s with N websocket clients vs with none, in alternating rounds
            (A B A B …) so machine load drifts equally over both; target ratio ≥ 0.97

The clients run in a separate process (as TouchDesigner or a browser would) and read
everything.  Usage:
  python bench/latency.py [--model builtin:tiny] [--steps 20] [--rounds 3] [--clients 8] [--size 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run_clients(url: str, n: int) -> None:
    """Client process: n websocket clients that read everything until killed."""
    from websockets.asyncio.client import connect

    async def one(i: int, ready: asyncio.Event, counts: list):
        async with connect(url, max_size=None) as ws:
            await ws.recv()  # hello
            counts[0] += 1
            if counts[0] == n:
                ready.set()
            async for _ in ws:
                pass

    async def main():
        ready, counts = asyncio.Event(), [0]
        tasks = [asyncio.create_task(one(i, ready, counts)) for i in range(n)]
        await ready.wait()
        print("ready", flush=True)
        await asyncio.gather(*tasks)

    asyncio.run(main())


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if len(values) else float("nan")


class StepClock:
    """A sink that records each run's step times (from the engine's own ``elapsed``)."""

    def __init__(self):
        self.elapsed: list[float] = []

    def on_run_start(self, _):
        self.elapsed = []

    def on_step(self, frame):
        self.elapsed.append(frame.elapsed)

    def steps_per_second(self) -> float:
        e = self.elapsed[1:]  # from the end of step 0: the first step carries warm-up
        return (len(e) - 1) / (e[-1] - e[0]) if len(e) > 1 and e[-1] > e[0] else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin:tiny")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5, help="A/B round pairs (none vs clients)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--size", type=int, default=0, help="image side (0: the model's native size)")
    parser.add_argument("--client-mode", nargs=2, metavar=("URL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client_mode:
        run_clients(args.client_mode[0], int(args.client_mode[1]))
        return 0

    from bridge.bus import Bus
    from bridge.engine import Engine, GenerationRequest
    from bridge.sinks import SinkConfig, build_sinks

    engine = Engine.load(args.model, progress=False)
    osc_listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    osc_listener.bind(("127.0.0.1", 0))
    osc_listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sinks = build_sinks(SinkConfig(port=0, web_root=None, osc_out=[f"127.0.0.1:{osc_listener.getsockname()[1]}"],
                                   progress=False))
    clock = StepClock()
    bus = Bus([clock, *sinks.all])
    size = args.size or None
    request = GenerationRequest("a red apple on a wooden table next to a window", steps=args.steps, seed=1,
                                width=size, height=size)
    engine.generate(GenerationRequest("warm up", steps=2), Bus())  # first-call costs out of the way

    rates = {"none": [], "clients": []}
    cpu = {"none": [], "clients": []}  # websocket thread CPU ms per step
    ws, osc = sinks.websocket, sinks.osc
    print(f"model {args.model}, {args.steps} steps/run, {args.rounds} rounds, {args.clients} clients, "
          f"websocket {ws.url}")
    try:
        for r in range(args.rounds):
            c0 = ws.thread_cpu()
            rates["none"].append(_one_run(engine, request, bus, clock))
            cpu["none"].append((ws.thread_cpu() - c0) / args.steps * 1000)
            proc = subprocess.Popen([sys.executable, __file__, "--client-mode", ws.url, str(args.clients)],
                                    stdout=subprocess.PIPE, text=True)
            try:
                assert proc.stdout.readline().strip() == "ready"
                ws.latencies.clear()
                ws.step_bytes.clear()
                osc.latencies.clear()
                c0 = ws.thread_cpu()
                rates["clients"].append(_one_run(engine, request, bus, clock))
                time.sleep(0.5)  # let the last step drain to every client
                cpu["clients"].append((ws.thread_cpu() - c0) / args.steps * 1000)
                lat_ws, step_bytes, lat_osc = list(ws.latencies), list(ws.step_bytes), list(osc.latencies)
                dropped = ws.dropped
            finally:
                proc.terminate()
                proc.wait(10)
            print(f"round {r + 1}: none {rates['none'][-1]:.2f} steps/s, {args.clients} clients "
                  f"{rates['clients'][-1]:.2f} steps/s, dropped {dropped}")
    finally:
        sinks.close()
        osc_listener.close()

    none, with_clients = statistics.median(rates["none"]), statistics.median(rates["clients"])
    pair_ratios = [c / n for n, c in zip(rates["none"], rates["clients"])]
    print()
    print(f"websocket latency step end → bytes written (last round, {len(lat_ws)} client-steps): "
          f"p50 {percentile(lat_ws, 50) * 1000:.2f} ms, p99 {percentile(lat_ws, 99) * 1000:.2f} ms")
    print(f"OSC latency step end → datagrams sent: p50 {percentile(lat_osc, 50) * 1000:.2f} ms, "
          f"p99 {percentile(lat_osc, 99) * 1000:.2f} ms")
    print(f"websocket thread CPU per step: {statistics.median(cpu['none']):.2f} ms with no clients, "
          f"{statistics.median(cpu['clients']):.2f} ms with {args.clients} (includes socket syscalls, which release the GIL)")
    print(f"bytes per step per websocket client: {int(statistics.median(step_bytes)) if step_bytes else 0}")
    print(f"bytes per step per OSC target: {osc.last_step_bytes}")
    print(f"generation: {none:.2f} steps/s with no clients, {with_clients:.2f} steps/s with {args.clients} clients "
          f"(medians of {args.rounds}); ratio {with_clients / none:.3f}, median of per-round ratios "
          f"{statistics.median(pair_ratios):.3f} (target ≥ 0.97)")
    interrupt, step_time = measure_interrupt(engine, request, args.rounds)
    print(f"VJ interrupt: prompt → first step frame of the new run p50 {statistics.median(interrupt) * 1000:.0f} ms, "
          f"max {max(interrupt) * 1000:.0f} ms; one step takes {step_time * 1000:.0f} ms")
    print(json.dumps({"interrupt_p50_ms": statistics.median(interrupt) * 1000, "step_ms": step_time * 1000,
                      "p50_ms": percentile(lat_ws, 50) * 1000, "p99_ms": percentile(lat_ws, 99) * 1000,
                      "osc_p50_ms": percentile(lat_osc, 50) * 1000, "osc_p99_ms": percentile(lat_osc, 99) * 1000,
                      "bytes_per_step": int(statistics.median(step_bytes)) if step_bytes else 0,
                      "steps_per_s_none": none, "steps_per_s_clients": with_clients, "ratio": with_clients / none,
                      "median_pair_ratio": statistics.median(pair_ratios),
                      "ws_cpu_ms_per_step_none": statistics.median(cpu["none"]),
                      "ws_cpu_ms_per_step_clients": statistics.median(cpu["clients"])}))
    return 0


class Stamps:
    """A sink that timestamps every event as it is published."""

    def __init__(self):
        self.events: list = []
        self.cond = threading.Condition()

    def _add(self, event):
        with self.cond:
            self.events.append((time.perf_counter(), event))
            self.cond.notify_all()

    on_run_start = on_step = on_run_end = _add


def measure_interrupt(engine, request, rounds: int) -> tuple[list[float], float]:
    """Seconds from a new prompt (submitted after step 3 of a long run) to the new run's first
    step frame, per round; and the median step time of the interrupted runs."""
    from dataclasses import replace

    from bridge.bus import Bus
    from bridge.frames import StepFrame
    from bridge.live.runner import Runner

    stamps = Stamps()
    runner = Runner(engine, Bus([stamps]), make_request=None)
    runner.start()
    latencies, step_times = [], []
    try:
        for r in range(rounds):
            long_run = engine.validate(replace(request, steps=200, seed=r))
            runner.submit(long_run)
            with stamps.cond:
                stamps.cond.wait_for(lambda: sum(isinstance(e, StepFrame) and e.total == 200 and e.step >= 3
                                                 for _, e in stamps.events[-1:]) > 0, 120)
            frames = [t for t, e in stamps.events if isinstance(e, StepFrame) and e.total == 200][-3:]
            step_times.append((frames[-1] - frames[0]) / 2)
            t0 = time.perf_counter()
            runner.submit(engine.validate(replace(request, seed=100 + r)))
            with stamps.cond:
                stamps.cond.wait_for(lambda: any(isinstance(e, StepFrame) and e.total == request.steps and t > t0
                                                 for t, e in stamps.events[-3:]), 120)
                first = next(t for t, e in stamps.events if isinstance(e, StepFrame) and e.total == request.steps and t > t0)
            latencies.append(first - t0)
            runner.cancel()
            runner.wait_for(lambda r: r.state == "idle", 60)
            stamps.events.clear()
    finally:
        runner.stop()
    return latencies, statistics.median(step_times)


def _one_run(engine, request, bus, clock) -> float:
    end = engine.generate(request, bus)
    assert end.status == "completed", end.error
    return clock.steps_per_second()


if __name__ == "__main__":
    sys.exit(main())
