"""The live bridge end to end: VJ interrupt, pause/resume, installation loops, presets, the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridge.live.runner import Playlist
from bridge.recording import load_recording
from tests._live import OscCollector, WsClient, free_udp_port, is_json, live_session

ROOT = Path(__file__).resolve().parents[1]


def test_vj_prompt_interrupts_the_running_generation(tiny_engine):
    with live_session(tiny_engine, steps=40) as session:
        client = WsClient(session.websocket.url)
        client.send({"type": "prompt", "prompt": "a slow red apple"})
        first = client.until(is_json("run_start"))
        client.until(lambda m: isinstance(m, dict) and m["type"] == "step" and m["step"] >= 1)
        sent = time.monotonic()
        client.send({"type": "prompt", "prompt": "a quick blue bird", "steps": 2})
        cancelled = client.until(is_json("run_end"))
        second = client.until(is_json("run_start"))
        client.until(is_json("step", run=second["run"]))
        latency = time.monotonic() - sent
        done = client.until(is_json("run_end", run=second["run"]))
        client.close()
    assert cancelled["run_id"] == first["run_id"] and cancelled["status"] == "cancelled"
    assert 2 <= cancelled["steps_done"] < 40
    assert second["prompt"] == "a quick blue bird" and done["status"] == "completed" and done["steps_done"] == 2
    print(f"prompt → first step frame of the new run: {latency * 1000:.0f} ms")


def test_pause_holds_between_steps_and_resume_goes_on(tiny_engine, collect):
    with live_session(tiny_engine, steps=6) as session:
        session.bus.add(collect)
        client = WsClient(session.websocket.url)
        client.send({"type": "prompt", "prompt": "a red apple"})
        client.until(is_json("step", step=0))
        client.send({"type": "pause"})
        assert session.runner.wait_for(lambda r: r.state == "paused", 30)
        held = len(collect.frames)
        time.sleep(0.5)
        assert len(collect.frames) == held < 6  # nothing is generated while paused
        client.send({"type": "resume"})
        end = client.until(is_json("run_end"))
        client.close()
    assert end["status"] == "completed" and end["steps_done"] == 6 and len(collect.frames) == 6


def test_cancel_and_invalid_prompts_keep_the_server_serving(tiny_engine):
    with live_session(tiny_engine, steps=30) as session:
        client = WsClient(session.websocket.url)
        for bad, words in [({"type": "prompt", "prompt": "   "}, "empty"),
                           ({"type": "prompt", "prompt": " ".join(["word"] * 10_000)}, "10000 words"),
                           ({"type": "prompt", "prompt": "a cat", "steps": -1}, "steps"),
                           ({"type": "set", "guidance": "NaN"}, "guidance"),
                           ({"type": "prompt", "prompt": "a cat", "width": 100}, "multiple of 8"),
                           ({"type": "preset", "name": "instalation"}, "did you mean 'installation'")]:
            client.send(bad)
            err = client.until(is_json("error"))
            assert words in err["message"], err
        client.send({"type": "prompt", "prompt": "a cat"})
        client.until(is_json("step", step=0))
        client.send({"type": "cancel"})
        end = client.until(is_json("run_end"))
        client.close()
    assert end["status"] == "cancelled"
    assert session.settings["steps"] == 30  # refused values changed nothing


def test_installation_mode_completes_two_playlist_loops_and_records(tiny_engine, tmp_path):
    prompts = ["a red apple", "   ", "a blue bird"]  # the blank entry fails and is skipped
    with live_session(tiny_engine, mode="installation", playlist=prompts, steps=2, pause=0.05, loops=2,
                      seeds="random", record=str(tmp_path)) as session:
        client = WsClient(session.websocket.url)
        ends = []
        client.until(lambda m: is_json("run_end")(m) and ends.append(m) is None and len(ends) == 4, timeout=120)
        assert session.runner.wait_for(lambda r: r.playlist.finished and r.state == "idle", 30)
        client.close()
    runs = session.runner.runs
    assert [r.status for r in runs] == ["completed"] * 4
    starts = client.json("run_start")
    assert [s["prompt"] for s in starts] == ["a red apple", "a blue bird"] * 2
    assert len({s["seed"] for s in starts}) == 4  # a fresh seed per run
    errors = client.json("error")
    assert len(errors) == 2 and all("skipped" in e["message"] and "empty" in e["message"] for e in errors)
    recorded = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(recorded) == 4
    assert all(load_recording(p).status == "completed" and len(load_recording(p)) == 2 for p in recorded)


def test_playlist_seed_modes():
    inc = Playlist(["a", "b"], "increment", base_seed=10, loops=2)
    assert [inc.next_entry() for _ in range(5)] == [("a", 10), ("b", 11), ("a", 12), ("b", 13), None]
    fixed = Playlist(["a"], "fixed", base_seed=3, loops=0)
    assert [fixed.next_entry() for _ in range(3)] == [("a", 3)] * 3 and not fixed.finished


def test_preset_switch_changes_mode_and_settings(tiny_engine):
    with live_session(tiny_engine, steps=2) as session:
        client = WsClient(session.websocket.url)
        client.send({"type": "preset", "name": "installation"})
        status = client.until(lambda m: isinstance(m, dict) and m["type"] == "status" and m["preset"] == "installation")
        assert status["mode"] == "installation" and status["settings"]["steps"] == 30
        client.send({"type": "next"})  # skip the installation pause at once
        client.send({"type": "preset", "name": "live"})
        client.until(lambda m: isinstance(m, dict) and m["type"] == "status" and m["preset"] == "live")
        client.send({"type": "cancel"})
        client.close()
        assert session.runner.wait_for(lambda r: r.state == "idle", 60)
        assert session.runner.mode == "vj"


def test_run_bridge_serves_with_a_preset_and_cli_overrides(tmp_path):
    """`python run_bridge.py` as a user starts it: prints where to connect, streams, stops on SIGTERM."""
    out = OscCollector()
    osc_in = free_udp_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "run_bridge.py", "--model", "builtin:tiny", "--device", "cpu", "--port", "0",
         "--osc-in-port", str(osc_in), "--osc-out", out.target, "--steps", "2", "--prompt", "a lighthouse at dusk",
         "--no-progress"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert out.wait_for(lambda m: any(a == "/daam/run/end" for a, _ in m), 120), "autostart run did not finish"
        assert out.addresses("/daam/run/prompt") == [["a lighthouse at dusk"]]
        assert out.addresses("/daam/run/start")[0][0] == 2  # --steps beat the preset's 20
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        out.close()
    assert proc.returncode == 0, output
    assert "viewer:     http://127.0.0.1:" in output and f"OSC in:     127.0.0.1:{osc_in}" in output


def test_bad_preset_and_flags_are_one_line_errors():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for args, message in [(["--preset", "liev"], "did you mean 'live'"),
                          (["--osc-out", "nowhere"], "host:port"),
                          (["--width", "100"], "multiple of 8"),
                          (["--host", "0.0.0.0"], "needs a shared token")]:
        r = subprocess.run([sys.executable, "run_bridge.py", *args], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_help_lists_the_presets():
    r = subprocess.run([sys.executable, "run_bridge.py", "serve", "--help"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0
    for name in ("live", "installation", "timelapse", "showcase"):
        assert f"\n  {name}" in r.stdout
    assert "--osc-out" in r.stdout and "--steps" in r.stdout and "--token" in r.stdout


@pytest.mark.parametrize("kind", ["websocket", "osc"])
def test_a_port_in_use_fails_in_one_line_before_the_model_loads(kind):
    import socket

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM if kind == "websocket" else socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    if kind == "websocket":
        taken.listen()
    port = taken.getsockname()[1]
    flags = ["--port", str(port), "--osc-in-port", "0"] if kind == "websocket" else ["--port", "0", "--osc-in-port", str(port)]
    try:
        r = subprocess.run([sys.executable, "run_bridge.py", "serve", *flags, "--no-progress"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    finally:
        taken.close()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"127.0.0.1:{port}" in r.stderr and ("--port" if kind == "websocket" else "--osc-in-port") in r.stderr
    assert "loading model" not in r.stderr  # refused before the (slow) model load
