#!/usr/bin/env python3
"""Generation speed beside busy processes: torch's default CPU threads vs the bridge's choice.

    python bench/threads.py [--model builtin] [--steps 20] [--rounds 3] [--runs 3] [--hogs 0,1,2]

For each load (0, 1, 2 … busy processes, each a Python loop that spins on one core, as a
second run or TouchDesigner would), each thread setting runs in its own process, loads the
model once, and times --runs renders; settings alternate round by round (default, chosen,
default, …) so load drifts equally over both.  Reported: the median wall time of a
run and its min–max over all rounds, and the ratio default / chosen.

"default" is torch's own choice (one thread per core); "chosen" is the bridge's automatic
choice (usable cores − 1, see bridge/threads.py).  On 2 cores with one busy process, torch's
threads wait for the one that lost its core at every operation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HOG = "while True: pass"


def worker(model: str, threads: int, steps: int, runs: int) -> None:
    """One setting in a fresh process: load, warm up, time ``runs`` renders, print JSON."""
    import torch

    from bridge.bus import Bus
    from bridge.engine import Engine, GenerationRequest

    threads = threads or torch.get_num_threads()  # 0: keep torch's own default
    engine = Engine.load(model, threads=threads)
    req = engine.validate(GenerationRequest("a yellow star and a green circle", seed=3, steps=steps))
    engine.generate(req, Bus())  # warm-up
    walls = []
    for _ in range(runs):
        t = time.perf_counter()
        end = engine.generate(req, Bus())
        walls.append(time.perf_counter() - t)
        assert end.status == "completed", end.error
    print(json.dumps({"threads": torch.get_num_threads(), "walls": walls}), flush=True)


def run_setting(args, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--model", args.model, "--threads", str(threads),
           "--steps", str(args.steps), "--runs", str(args.runs)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per load (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="timed renders per process (default: %(default)s)")
    parser.add_argument("--hogs", default="0,1,2", help="numbers of busy processes to test, comma-separated")
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.model, args.threads, args.steps, args.runs)
        return 0

    from bridge.threads import choose_threads, usable_cores

    chosen = choose_threads()
    print(f"{usable_cores()} usable cores; {args.model}, {args.steps} steps; {args.rounds} rounds × {args.runs} renders "
          f"per setting and load; wall seconds per render")
    print(f"{'busy processes':>15}{'setting':>22}{'median s':>10}{'min–max s':>16}{'default/chosen':>16}")
    for hogs in (int(h) for h in args.hogs.split(",")):
        procs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(hogs)]
        try:
            walls = {"default": [], "chosen": []}
            names = {}
            for _ in range(args.rounds):
                for key, threads in (("default", 0), ("chosen", chosen)):
                    result = run_setting(args, threads)
                    walls[key] += result["walls"]
                    names[key] = f"{key} ({result['threads']} thread{'s' if result['threads'] > 1 else ''})"
        finally:
            for p in procs:
                p.kill()
                p.wait()
        med = {k: statistics.median(v) for k, v in walls.items()}
        for key in walls:
            ratio = f"×{med['default'] / med['chosen']:.2f}" if key == "chosen" else ""
            print(f"{hogs:>15}{names[key]:>22}{med[key]:>10.2f}{min(walls[key]):>8.2f}–{max(walls[key]):<7.2f}{ratio:>16}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
