"""Controlling a replay over the live wire: websocket JSON and OSC datagrams on real sockets."""

from __future__ import annotations

import socket
import time

import pytest
from pythonosc.osc_message_builder import OscMessageBuilder

from _live import OscCollector, WsClient, is_json
from bridge.commands.replay import ReplaySession
from bridge.presets import defaults
from replay_recordings import synthetic_recording


def free_udp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def osc_send(port: int, address: str, *args) -> None:
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b.build().dgram, ("127.0.0.1", port))


def wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def session(tmp_path):
    for name in ("a", "b"):
        synthetic_recording(tmp_path / "runs" / name, steps=40, step_seconds=0.05, run_id=f"run-{name}")
    osc_out = OscCollector()
    values = defaults()
    values.update(recordings=str(tmp_path / "runs"), port=0, osc_in_port=free_udp_port(), osc_out=[osc_out.target],
                  web_root="web", loop=False, shuffle=False, speed=1.0)
    s = ReplaySession(values, gap=0, progress=False, paused=True).start()
    s.osc_collector = osc_out
    yield s
    s.close()
    osc_out.close()


def test_websocket_controls_resume_speed_pause_next(session):
    import threading

    player_thread = threading.Thread(target=session.play, daemon=True)
    player_thread.start()
    ws = WsClient(session.sinks.websocket.url)
    try:
        ws.until(is_json("hello"))
        ws.until(is_json("status", mode="replay", state="paused"))
        ws.send({"type": "resume"})
        ws.until(lambda m: isinstance(m, dict) and m.get("type") == "step" and m["step"] >= 1, 10)
        ws.send({"type": "speed", "speed": 4})
        ws.until(lambda m: isinstance(m, dict) and m.get("type") == "status" and (m.get("replay") or {}).get("speed") == 4, 10)
        ws.send({"type": "pause"})
        ws.until(is_json("status", state="paused"), 10)
        ws.send({"type": "next"})
        end = ws.until(is_json("run_end"), 10)
        assert (end["run_id"], end["status"]) == ("run-a", "cancelled")
        ws.send({"type": "resume"})
        ws.until(is_json("run_end", run_id="run-b"), 20)
        ws.send({"type": "prompt", "prompt": "a cat"})
        err = ws.until(is_json("error"), 5)
        assert "not available while replaying" in err["message"]
        ws.send({"type": "speed", "speed": -1})
        err = ws.until(is_json("error"), 5)
        assert err["message"] == "speed must be within 0.001..1000, got -1"
    finally:
        ws.close()
        session.player.stop()
        player_thread.join(5)


def test_osc_controls_resume_speed_and_next(session):
    import threading

    player_thread = threading.Thread(target=session.play, daemon=True)
    player_thread.start()
    port = session.osc_in.port
    osc = session.osc_collector
    try:
        osc.wait_for(lambda msgs: any(a == "/daam/run/start" for a, _ in msgs), 5)
        time.sleep(0.3)
        assert not osc.addresses("/daam/step")  # paused: no step yet
        osc_send(port, "/daam/resume", 1)
        osc.wait_for(lambda msgs: any(a == "/daam/step" for a, _ in msgs), 5)
        osc_send(port, "/daam/speed", 8.0)
        assert wait_until(lambda: session.player.speed == 8.0)
        osc_send(port, "/daam/next", 1)
        osc.wait_for(lambda msgs: len([a for a, _ in msgs if a == "/daam/run/status"]) >= 1, 5)
        assert osc.addresses("/daam/run/status")[0] == ["cancelled"]
        osc_send(port, "/daam/status")
        osc.wait_for(lambda msgs: any(a == "/daam/status" for a, _ in msgs), 5)
        assert osc.addresses("/daam/status")[0][1:] == ["replay", ""]
        osc_send(port, "/daam/speed", "fast")
        osc.wait_for(lambda msgs: any(a == "/daam/error" for a, _ in msgs), 5)
        assert osc.addresses("/daam/error")[0][1] == "speed must be a number, got text"
    finally:
        session.player.stop()
        player_thread.join(5)
