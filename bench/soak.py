"""Soak: run the installation preset for a while, as a show would, and report what it cost.

    python bench/soak.py --minutes 60                  # the installation preset, recording every run
    python bench/soak.py --minutes 5 --pause 0 --model builtin:tiny

The bridge runs as its own process (`run_bridge.py serve`), exactly as an installation starts it;
this script watches it from outside only: a websocket client counts run ends and errors, the
process's resident memory is sampled from /proc every few seconds, the recording folder is
measured on disk, and the bridge's log is scanned for tracebacks.  Prints: runs completed /
failed / cancelled, RSS at minute 5 (or a fifth of the way, for short soaks) and at the end with
the growth in per cent, disk used by recordings, error messages and traceback count.
Loopback only; it stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _disk_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.exists() else 0


class Watcher(threading.Thread):
    """A websocket client that counts run ends by status and error messages."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.ends = {"completed": 0, "failed": 0, "cancelled": 0}
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        from websockets.exceptions import WebSocketException
        from websockets.sync.client import connect

        while not self.stop.is_set():
            try:
                with connect(self.url, max_size=None, open_timeout=5) as ws:
                    ws.send(json.dumps({"type": "subscribe", "frames": [], "meta": False}))
                    while not self.stop.is_set():
                        try:
                            msg = ws.recv(timeout=1)
                        except TimeoutError:
                            continue
                        if isinstance(msg, str):
                            data = json.loads(msg)
                            if data.get("type") == "run_end":
                                self.ends[data.get("status", "failed")] = self.ends.get(data.get("status"), 0) + 1
                            elif data.get("type") == "error":
                                self.errors.append(data.get("message", "")[:200])
            except (OSError, WebSocketException):
                if not self.stop.is_set():
                    time.sleep(0.5)  # the bridge is starting (or restarting): try again


def main(argv=None) -> int:
    from tqdm import tqdm

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=60.0, help="how long to run (default: %(default)s)")
    p.add_argument("--preset", default="installation")
    p.add_argument("--model", default="builtin")
    p.add_argument("--pause", type=float, default=None, help="seconds between runs (default: the preset's)")
    p.add_argument("--record", default="", help="recording folder (default: a temporary one, removed afterwards)")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more serve flags, e.g. --extra --keep-runs 50")
    args = p.parse_args(argv)

    record = Path(args.record) if args.record else Path(tempfile.mkdtemp(prefix="soak-"))
    port = _free_port()
    cmd = [sys.executable, str(ROOT / "run_bridge.py"), "serve", "--preset", args.preset, "--model", args.model,
           "--port", str(port), "--osc-in-port", str(_free_port(socket.SOCK_DGRAM)), "--osc-out", "127.0.0.1:9",
           "--record", str(record), "--no-progress", *(["--pause", str(args.pause)] if args.pause is not None else []),
           *args.extra]
    log_path = record.parent / f"{record.name}.log"
    with open(log_path, "w") as log:
        bridge = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    watcher = Watcher(f"ws://127.0.0.1:{port}/")
    watcher.start()
    total_s = args.minutes * 60
    baseline_at = min(300.0, total_s / 5)
    samples: list[tuple[float, int]] = []
    t0 = time.monotonic()
    try:
        with tqdm(total=int(total_s), desc="soak", unit="s") as bar:
            while (elapsed := time.monotonic() - t0) < total_s:
                if bridge.poll() is not None:
                    print(f"the bridge exited with {bridge.returncode} after {elapsed:.0f} s; see {log_path}")
                    break
                samples.append((elapsed, _rss_bytes(bridge.pid)))
                bar.n = int(elapsed)
                bar.set_postfix(runs=watcher.ends["completed"], rss=f"{samples[-1][1] / 2**20:.0f}M")
                time.sleep(5)  # a sampling period, not synchronisation
    finally:
        bridge.terminate()
        try:
            bridge.wait(30)
        except subprocess.TimeoutExpired:
            bridge.kill()
        watcher.stop.set()
    base = next((rss for t, rss in samples if t >= baseline_at and rss), samples[0][1] if samples else 0)
    end = next((rss for _, rss in reversed(samples) if rss), 0)
    text = log_path.read_text(errors="replace")
    print(f"ran {time.monotonic() - t0:.0f} s: runs completed {watcher.ends['completed']}, failed {watcher.ends['failed']}, "
          f"cancelled {watcher.ends['cancelled']}")
    growth = 100 * (end - base) / base if base else float("nan")
    print(f"RSS at {baseline_at / 60:.1f} min {base / 2**20:.1f} MiB, at the end {end / 2**20:.1f} MiB: {growth:+.2f} %")
    print(f"recordings on disk: {_disk_bytes(record) / 1e6:.1f} MB in {sum(1 for _ in record.iterdir()) if record.exists() else 0} entries")
    print(f"error replies: {len(watcher.errors)}; tracebacks in the log: {text.count('Traceback')}; log {len(text) / 1e3:.0f} kB")
    if not args.record:
        shutil.rmtree(record, ignore_errors=True)
        os.remove(log_path)
    return 0 if bridge.returncode in (0, -15, None) else 1


if __name__ == "__main__":
    raise SystemExit(main())
