#!/usr/bin/env python3
"""Replay throughput from disk (steps/s) and timelapse render speed (frames/s).

Makes a synthetic recording with the real Recorder (default: 16 words, 64×64 maps, 512×512
previews, 200 steps), then measures side by side in one run:

  read        Recording.frames(): manifest, index, two .npy and one PNG per step
  replay      Player at --speed max onto an empty Bus (reading + pacing machinery)
  replay+wire Player at max speed onto the live sinks: websocket (one client reading all it
              gets) and OSC (to a local UDP port).  Free-running, the sinks drop stale steps for
              a client that falls behind (they never slow the source); in lockstep each step
              waits until the client has it: the end-to-end rate with nothing dropped
  timelapse   frames/s of each layout rendered to MP4

Target: replay ≥ 200 steps/s for 16 words at 64×64.  Usage:
  python bench/replay_throughput.py [--steps 200] [--words 16] [--map 64] [--image 512]
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.bus import Bus  # noqa: E402
from bridge.frames import RunEnd, RunStart, StepFrame, attention_mass  # noqa: E402
from bridge.phases import PhaseSchedule  # noqa: E402
from bridge.recording import Recorder, load_recording  # noqa: E402
from bridge.replay import Player  # noqa: E402


def make_recording(folder: Path, steps: int, words: int, map_hw: int, image: int, seed: int = 0) -> Path:
    """A run with moving Gaussian blobs per word and a smooth preview: realistic sizes, fast to make."""
    rng = np.random.default_rng(seed)
    names = tuple(f"word{i}" for i in range(words))
    phases = PhaseSchedule()
    start = RunStart("bench-run", " ".join(names), "", seed, steps, 7.5, image, image, (map_hw, map_hw), names,
                     tuple((i + 1,) for i in range(words)), (), "synthetic", "bench", phases, {})
    rec = Recorder(folder)
    rec.on_run_start(start)
    yy, xx = np.mgrid[0:map_hw, 0:map_hw] / map_hw
    iy, ix = np.mgrid[0:image, 0:image] / image
    centre = rng.random((words, 2))
    cumulative = np.zeros((words, map_hw, map_hw), np.float32)
    for s in range(steps):
        c = centre + 0.1 * np.sin(s / 10 + np.arange(words))[:, None]
        maps = np.exp(-((xx[None] - c[:, 0, None, None]) ** 2 + (yy[None] - c[:, 1, None, None]) ** 2) / 0.02)
        maps = (maps * (1 + s / steps) + 0.05 * rng.random(maps.shape)).astype(np.float16)
        cumulative += maps
        t = s / steps
        preview = np.stack([ix * 255, iy * 255, np.full_like(ix, 255 * t)], -1).astype(np.uint8)
        preview = (preview * (0.7 + 0.3 * np.sin(ix * 12 + t * 6)[..., None])).astype(np.uint8)
        rec.on_step(StepFrame("bench-run", s, steps, 1000 * (1 - t), phases.phase_at(s, steps),
                              phases.weights_at(s, steps), names, maps, cumulative.astype(np.float16),
                              attention_mass(maps), preview, 0.05 * (s + 1), {}))
    rec.on_run_end(RunEnd("bench-run", "completed", steps, 0.05 * steps, preview))
    return folder


def bench_read(folder: Path) -> float:
    rec = load_recording(folder)
    t0 = time.perf_counter()
    n = sum(1 for _ in rec.frames())
    return n / (time.perf_counter() - t0)


class Count:
    def __init__(self):
        self.steps = 0

    def on_step(self, frame):
        self.steps += 1


def bench_replay(folder: Path, sinks=()) -> float:
    count = Count()
    player = Player([load_recording(folder)], Bus([count, *sinks]), speed="max")
    t0 = time.perf_counter()
    player.play()
    return count.steps / (time.perf_counter() - t0)


class _Lockstep:
    """The last sink on the Bus: holds each step until the websocket client has received it,
    so the measured rate is steps delivered end to end with nothing dropped."""

    def __init__(self, delivered):
        self.delivered = delivered  # callable: steps the client has received so far
        self.published = 0

    def on_step(self, frame):
        self.published += 1
        deadline = time.perf_counter() + 5
        while self.delivered() < self.published and time.perf_counter() < deadline:
            time.sleep(0.0002)


def bench_replay_wire(folder: Path, lockstep: bool) -> tuple[float, dict]:
    """Player at max speed onto the live websocket + OSC sinks, one websocket client reading all.

    Without ``lockstep`` the player runs free and the sinks drop stale steps for the client;
    with it each step waits until the client has it (end-to-end delivery rate)."""
    from websockets.sync.client import connect

    from bridge.sinks import SinkConfig, build_sinks

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.2)
    received = {"ws_messages": 0, "ws_bytes": 0, "ws_steps": 0, "osc_datagrams": 0}
    stop = threading.Event()

    def drain_udp():
        while not stop.is_set():
            try:
                udp.recvfrom(65535)
                received["osc_datagrams"] += 1
            except OSError:
                pass

    sinks = build_sinks(SinkConfig(port=0, web_root=None, osc_out=[f"127.0.0.1:{udp.getsockname()[1]}"], progress=False))
    client = connect(sinks.websocket.url, max_size=None)

    def drain_ws():
        try:
            for m in client:
                received["ws_messages"] += 1
                received["ws_bytes"] += len(m)
                if isinstance(m, str) and '"type":"step"' in m:
                    received["ws_steps"] += 1
        except Exception:
            pass

    threads = [threading.Thread(target=drain_udp, daemon=True), threading.Thread(target=drain_ws, daemon=True)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    extra = [_Lockstep(lambda: received["ws_steps"])] if lockstep else []
    try:
        rate = bench_replay(folder, [*sinks.all, *extra])
        time.sleep(0.5)
        received["ws_dropped_steps"] = sinks.websocket.dropped
    finally:
        client.close()
        sinks.close()
        stop.set()
        udp.close()
    return rate, received


def bench_startup(folder: Path, repeat: int) -> float:
    """Seconds from launching `run_bridge.py replay --paused` to its websocket listening (best of N)."""
    import signal
    import subprocess

    root = Path(__file__).resolve().parents[1]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "run_bridge.py", "replay", str(folder), "--paused", "--port", "0",
                                 "--osc-in-port", "0", "--no-progress"], cwd=root, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        for line in proc.stdout:
            if line.startswith("websocket:"):
                times.append(time.perf_counter() - t0)
                break
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    return min(times)


def bench_timelapse(folder: Path, out: Path, steps: int) -> list[tuple[str, float, str]]:
    from bridge.timelapse import TimelapseOptions, render_timelapse

    rows = []
    for layout, words, size in (("single", (), 384), ("side", (), 384), ("grid", (), 192), ("particles", (), 384)):
        opts = TimelapseOptions(layout=layout, words=words, size=size, fps=12, hold=0)
        summary = render_timelapse(folder, out / f"{layout}.mp4", opts, progress=False)
        w, h = summary["size"]
        rows.append((layout, summary["fps_rendered"], f"{summary['frames']} frames {w}x{h}, {len(summary['words'])} word(s)"))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--words", type=int, default=16)
    ap.add_argument("--map", type=int, default=64, help="map side (default 64)")
    ap.add_argument("--image", default="64,512", help="preview sides to try, comma-separated (default 64,512)")
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs per measurement (default 3): a busy machine only slows")
    ap.add_argument("--timelapse-steps", type=int, default=40, help="steps rendered per timelapse layout (default 40)")
    args = ap.parse_args()

    images = [int(x) for x in args.image.split(",")]
    best = lambda fn: max((fn() for _ in range(args.repeat)), key=lambda r: r if isinstance(r, float) else r[0])  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for image in images:
            t0 = time.perf_counter()
            folder = make_recording(tmp / f"run{image}", args.steps, args.words, args.map, image)
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            print(f"recording: {args.steps} steps, {args.words} words, {args.map}x{args.map} maps, {image}x{image} previews; "
                  f"{size / args.steps / 1024:.0f} KiB per step on disk (made in {time.perf_counter() - t0:.1f} s)")
            read = best(lambda: bench_read(folder))
            replay = best(lambda: bench_replay(folder))
            wire, received = best(lambda: bench_replay_wire(folder, lockstep=False))
            step, delivered = best(lambda: bench_replay_wire(folder, lockstep=True))
            print(f"  {'read from disk':<26}{read:8.0f} steps/s")
            print(f"  {'replay, no sinks':<26}{replay:8.0f} steps/s   (target >= 200)")
            print(f"  {'replay, websocket + OSC':<26}{wire:8.0f} steps/s published, free-running (the client got "
                  f"{received['ws_steps']} of them: stale steps are dropped for a client that falls behind)")
            print(f"  {'  same, lockstep':<26}{step:8.0f} steps/s delivered to the client, none dropped "
                  f"({delivered['ws_bytes'] / 2**20:.0f} MiB, {delivered['osc_datagrams']} OSC datagrams)")
        print(f"replay start-up: {bench_startup(folder, args.repeat):.2f} s from launch to serving")
        image = max(images)
        short = make_recording(tmp / "short", args.timelapse_steps, args.words, args.map, image, seed=1)
        print(f"timelapse of {args.timelapse_steps} steps, {image}x{image} previews, MP4:")
        for layout, fps, what in bench_timelapse(short, tmp, args.timelapse_steps):
            print(f"  {layout:<26}{fps:8.1f} frames/s   ({what})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
