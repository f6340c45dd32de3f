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

Each is measured for the websocket server in the generation process and in its own process
(``--wire-process``), one after the other.  The clients run in one separate asyncio process
(as TouchDesigner or a browser would) that only reads.  Usage:
  python bench/latency.py [--model builtin:tiny] [--steps 20] [--rounds 7] [--clients 8] [--size 0] [--wire both]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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
    """Client process: on "connect" (a line on stdin) n websocket clients connect and read
    everything; on "close" they leave.  Answers "ready" / "closed" on stdout."""
    from websockets.asyncio.client import connect

    async def one(ready: asyncio.Event, counts: list, stop: asyncio.Event):
        async with connect(url, max_size=None) as ws:
            await ws.recv()  # hello
            counts[0] += 1
            if counts[0] == n:
                ready.set()
            reader = asyncio.ensure_future(_drain(ws))
            await stop.wait()
            reader.cancel()

    async def main():
        loop = asyncio.get_running_loop()
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if line != "connect":
                return
            ready, counts, stop = asyncio.Event(), [0], asyncio.Event()
            tasks = [asyncio.create_task(one(ready, counts, stop)) for _ in range(n)]
            await ready.wait()
            print("ready", flush=True)
            await loop.run_in_executor(None, sys.stdin.readline)  # "close"
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            print("closed", flush=True)

    asyncio.run(main())


async def _drain(ws) -> None:
    async for _ in ws:
        pass


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


def pin_all_threads(pid: int, cores: set[int], except_tid: int | None = None) -> None:
    """Put every thread of process ``pid`` on ``cores`` (Linux: threads keep their own masks)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        tid = int(task.name)
        if tid != except_tid:
            try:
                os.sched_setaffinity(tid, cores)
            except OSError:  # a thread that has just ended
                pass


def other_threads_cpu() -> float:
    """CPU seconds of every thread of this process but the main (generation) one, from the
    scheduler's nanosecond counters (Linux); 0 elsewhere."""
    main, total = threading.main_thread().native_id, 0
    try:
        for task in Path("/proc/self/task").iterdir():
            if int(task.name) != main:
                try:
                    total += int((task / "schedstat").read_text().split()[0])
                except OSError:
                    pass
    except OSError:
        return 0.0
    return total / 1e9


class TimedSink:
    """Wraps a sink: the generation thread's time inside its ``on_step`` (handing a step over)."""

    def __init__(self, sink):
        self.sink, self.seconds = sink, 0.0

    def on_run_start(self, event):
        self.sink.on_run_start(event)

    def on_step(self, event):
        t = time.perf_counter()
        self.sink.on_step(event)
        self.seconds += time.perf_counter() - t

    def on_run_end(self, event):
        self.sink.on_run_end(event)


class Pinning:
    """Generation alone on core 0, everything else (the wire, its threads, the clients) on the
    others: on a small machine the fan-out then measures what it costs the generation's
    interpreter (the GIL), not cores shared with the client process."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2
        if self.enabled:
            cores = sorted(os.sched_getaffinity(0))
            self.generation, self.rest = {cores[0]}, set(cores[1:])

    def apply(self, *pids: int) -> None:
        if not self.enabled:
            return
        main = threading.main_thread().native_id
        os.sched_setaffinity(main, self.generation)
        pin_all_threads(os.getpid(), self.rest, except_tid=main)
        for pid in pids:
            pin_all_threads(pid, self.rest)

    def describe(self) -> str:
        if not self.enabled:
            return "no pinning"
        return f"generation pinned to core {min(self.generation)}, wire and clients to cores {sorted(self.rest)}"


class Clients:
    """The client process, kept for the whole bench; its clients connect and leave per round."""

    def __init__(self, url: str, n: int):
        self.proc = subprocess.Popen([sys.executable, __file__, "--client-mode", url, str(n)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def _say(self, line: str, answer: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        got = self.proc.stdout.readline().strip()
        assert got == answer, f"client process answered {got!r}"

    def connect(self) -> None:
        self._say("connect", "ready")

    def leave(self) -> None:
        self._say("close", "closed")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


def bench_wire(engine, request, args, wire_process: bool, pinning: Pinning) -> dict:
    """Alternating rounds, no clients vs N clients, on one wire variant."""
    from bridge.bus import Bus
    from bridge.sinks import SinkConfig, build_sinks

    osc_listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    osc_listener.bind(("127.0.0.1", 0))
    osc_listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sinks = build_sinks(SinkConfig(port=0, web_root=None, osc_out=[f"127.0.0.1:{osc_listener.getsockname()[1]}"],
                                   progress=False, wire_process=wire_process))
    clock = StepClock()
    ws, osc = sinks.websocket, sinks.osc
    handover = TimedSink(ws)
    bus = Bus([clock, *(handover if sink is ws else sink for sink in sinks.all)])
    clients = Clients(ws.url, args.clients)
    pinning.apply(clients.proc.pid, *([ws._process.pid] if wire_process else []))
    rates = {"none": [], "clients": []}
    cpu = {"none": [], "clients": []}  # wire CPU ms per step (the loop thread; the whole wire process)
    inside = {"none": [], "clients": []}  # ms per step the generation process spends on the wire
    lat_ws, step_bytes, lat_osc, dropped = [], [], [], 0
    name = "wire process" if wire_process else "wire in the generation process"
    try:
        _one_run(engine, request, bus, clock)  # this wire's first-call costs out of the way
        for r in range(args.rounds):
            c0, o0, h0 = ws.thread_cpu(), other_threads_cpu(), handover.seconds
            rates["none"].append(_one_run(engine, request, bus, clock))
            cpu["none"].append((ws.thread_cpu() - c0) / args.steps * 1000)
            inside["none"].append((other_threads_cpu() - o0 + handover.seconds - h0) / args.steps * 1000)
            clients.connect()
            pinning.apply(clients.proc.pid)  # its new threads too
            before = len(ws.latencies)
            osc.latencies.clear()
            c0, o0, h0 = ws.thread_cpu(), other_threads_cpu(), handover.seconds
            rates["clients"].append(_one_run(engine, request, bus, clock))
            ws.drain(10)  # the last step out to every client
            cpu["clients"].append((ws.thread_cpu() - c0) / args.steps * 1000)
            inside["clients"].append((other_threads_cpu() - o0 + handover.seconds - h0) / args.steps * 1000)
            lat_ws += list(ws.latencies)[before:]
            step_bytes = list(ws.step_bytes)
            lat_osc += list(osc.latencies)
            dropped += ws.dropped
            clients.leave()
            print(f"  {name}, round {r + 1}: none {rates['none'][-1]:.1f} steps/s, {args.clients} clients "
                  f"{rates['clients'][-1]:.1f} steps/s", flush=True)
    finally:
        clients.close()
        sinks.close()
        osc_listener.close()
    ratios = [c / n for n, c in zip(rates["none"], rates["clients"])]
    return {"name": name, "none": rates["none"], "clients": rates["clients"], "ratios": ratios,
            "lat_ws": lat_ws, "lat_osc": lat_osc, "step_bytes": step_bytes, "dropped": dropped,
            "cpu_none": statistics.median(cpu["none"]), "cpu_clients": statistics.median(cpu["clients"]),
            "inside_none": inside["none"], "inside_clients": inside["clients"],
            "handover": handover.seconds / max(1, 2 * args.rounds + 1) / args.steps * 1000}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin:tiny")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7, help="A/B round pairs (none vs clients) per wire")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--size", type=int, default=0, help="image side (0: the model's native size)")
    parser.add_argument("--wire", choices=("both", "in-process", "process"), default="both",
                        help="which websocket wire to measure (default: both, one after the other)")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="leave every thread where the OS puts it (default: generation alone on one core)")
    parser.add_argument("--client-mode", nargs=2, metavar=("URL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client_mode:
        run_clients(args.client_mode[0], int(args.client_mode[1]))
        return 0

    from bridge.bus import Bus
    from bridge.engine import Engine, GenerationRequest

    engine = Engine.load(args.model, progress=False)
    size = args.size or None
    request = GenerationRequest("a red apple on a wooden table next to a window", steps=args.steps, seed=1,
                                width=size, height=size)
    engine.generate(GenerationRequest("warm up", steps=2), Bus())  # first-call costs out of the way
    variants = {"both": (False, True), "in-process": (False,), "process": (True,)}[args.wire]
    pinning = Pinning(args.pin)
    print(f"model {args.model}, {args.steps} steps/run, {args.rounds} rounds per wire, {args.clients} clients "
          f"in one separate process that only reads; {pinning.describe()}")
    results = [bench_wire(engine, request, args, wp, pinning) for wp in variants]

    print()
    summary = {}
    for res in results:
        none, with_clients = statistics.median(res["none"]), statistics.median(res["clients"])
        lat, lo = res["lat_ws"], res["lat_osc"]
        print(f"{res['name']}:")
        print(f"  generation {none:.1f} steps/s with no clients ({min(res['none']):.1f}–{max(res['none']):.1f}), "
              f"{with_clients:.1f} with {args.clients} ({min(res['clients']):.1f}–{max(res['clients']):.1f}); "
              f"ratio per round median ×{statistics.median(res['ratios']):.3f} "
              f"(min–max ×{min(res['ratios']):.3f}–{max(res['ratios']):.3f}; target ≥ 0.97)")
        print(f"  websocket step → last byte handed to the socket ({len(lat)} client-steps): p50 "
              f"{percentile(lat, 50) * 1000:.2f} ms, p99 {percentile(lat, 99) * 1000:.2f} ms (target p99 ≤ 5 ms); "
              f"{res['dropped']} steps dropped for slow clients")
        print(f"  OSC step → datagrams sent: p50 {percentile(lo, 50) * 1000:.2f} ms, p99 {percentile(lo, 99) * 1000:.2f} ms")
        print(f"  wire CPU per step: {res['cpu_none']:.2f} ms with no clients, {res['cpu_clients']:.2f} ms with "
              f"{args.clients}; {int(statistics.median(res['step_bytes'])) if res['step_bytes'] else 0} bytes per "
              f"step per client")
        ins = res["inside_clients"]
        print(f"  inside the generation process, per step with {args.clients} clients: "
              f"{statistics.median(ins):.2f} ms ({min(ins):.2f}–{max(ins):.2f}) of handing steps over and of its other "
              f"threads' CPU (OSC included; {statistics.median(res['inside_none']):.2f} ms with no clients); handing one "
              f"step to the websocket sink {res['handover']:.2f} ms on average")
        summary[res["name"]] = {"inside_ms": statistics.median(ins), "ratio_median": statistics.median(res["ratios"]), "ratio_min": min(res["ratios"]),
                                "ratio_max": max(res["ratios"]), "p50_ms": percentile(lat, 50) * 1000,
                                "p99_ms": percentile(lat, 99) * 1000, "osc_p99_ms": percentile(lo, 99) * 1000,
                                "steps_per_s_none": none, "steps_per_s_clients": with_clients}
    interrupt, step_time = measure_interrupt(engine, request, min(args.rounds, 5))
    print(f"VJ interrupt: prompt → first step frame of the new run p50 {statistics.median(interrupt) * 1000:.0f} ms, "
          f"max {max(interrupt) * 1000:.0f} ms; one step takes {step_time * 1000:.0f} ms")
    print(json.dumps({**summary, "interrupt_p50_ms": statistics.median(interrupt) * 1000, "step_ms": step_time * 1000}))
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
