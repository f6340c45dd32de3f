"""Typed settings (bridge/settings.py) and the wire live and replay sessions share
(bridge/session_wiring.py): control dispatch tables, describe lines, OSC status replies."""

from __future__ import annotations

import dataclasses
import socket
import time

import pytest
from pythonosc.osc_message import OscMessage

from bridge.control import KINDS, Control, ControlError
from bridge.presets import FIELDS, defaults, load_preset
from bridge.session_wiring import Wire, dispatch
from bridge.settings import Settings


# --------------------------------------------------------------------------- Settings


def test_settings_are_generated_from_the_preset_schema():
    names = [f.name for f in dataclasses.fields(Settings)]
    assert names == [f.key for f in FIELDS]
    s = Settings()
    assert s.to_dict() == defaults()  # same defaults, lists as lists
    assert Settings.of(load_preset("installation").values).playlist == tuple(load_preset("installation").values["playlist"])


def test_settings_are_frozen_typed_and_refuse_unknown_keys():
    s = Settings.of({"steps": 7, "osc_out": ["127.0.0.1:9000"]})
    assert s.steps == 7 and s.osc_out == ("127.0.0.1:9000",) and s.seed == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.steps = 8
    t = s.replace(steps=9)
    assert (s.steps, t.steps) == (7, 9) and Settings.of(t) is t
    with pytest.raises(KeyError, match="stpes"):
        Settings.of({"stpes": 3})
    p = s.phases()
    assert (p.noise, p.structure, p.detail, p.blend) == (s.noise, s.structure, s.detail, s.blend)


# --------------------------------------------------------------------------- dispatch


def test_dispatch_applies_the_handler_of_the_kind_and_refuses_others():
    seen = []
    dispatch({"pause": seen.append}, Control("pause"), "{kind} is not here")
    assert seen == [{}]
    with pytest.raises(ControlError, match="^next is not here$") as err:
        dispatch({"pause": seen.append}, Control("next"), "{kind} is not here")
    assert err.value.code == "unknown_type"


def test_live_and_replay_sessions_share_the_wire_and_differ_in_their_tables(tiny_engine, tmp_path):
    from bridge.commands.replay import ReplaySession
    from bridge.live.session import LiveSession
    from tests._live import live_values
    from tests.replay_recordings import synthetic_recording

    synthetic_recording(tmp_path / "run", steps=2, run_id="run-a")
    values = live_values(port=0, osc_allow=["127.0.0.1"])
    live = LiveSession(tiny_engine, values, progress=False).start()
    replay = ReplaySession({**values, "recordings": str(tmp_path / "run"), "osc_in_port": 0}, gap=0, progress=False,
                           paused=True).start()
    try:
        assert set(live.handlers) == set(KINDS) - {"subscribe"}  # subscribe is the websocket sink's own
        assert set(replay.handlers) == {"pause", "resume", "next", "cancel", "speed", "select", "status"}
        live_lines, replay_lines = live.describe(), replay.describe()
        assert [line.split()[0] for line in live_lines] == ["viewer:", "websocket:", "OSC", "mode:"]
        assert live_lines[2] == (f"OSC in:     127.0.0.1:{live.osc_in.port} (/daam/prompt \"…\", allowed: 127.0.0.1)")
        assert [line.split()[0] for line in replay_lines] == ["viewer:", "websocket:", "replay:"]
        with pytest.raises(ControlError, match="speed applies to replayed recordings only"):
            live.control(Control("speed", {"speed": 2.0}))
        with pytest.raises(ControlError, match="preset is not available while replaying"):
            replay.control(Control("preset", {"name": "live"}))
        replay.control(Control("speed", {"speed": 2.0}))
        assert replay.player.speed == 2.0
    finally:
        replay.close()
        live.close()


# --------------------------------------------------------------------------- the wire


def _osc_listener():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    return sock


def test_wire_opens_replies_describes_and_closes():
    from bridge.bus import Bus

    target = _osc_listener()
    settings = Settings.of({"port": 0, "osc_in_port": 0, "osc_out": [f"127.0.0.1:{target.getsockname()[1]}"],
                            "osc_allow": ["127.0.0.1"], "web_root": "web"})
    wire = Wire(settings, control=lambda c: None, status=lambda: {"state": "idle", "mode": "vj"}, progress=False).open(Bus())
    try:
        lines = wire.describe('/prompt "…"')
        assert lines[0].startswith("viewer:     http://127.0.0.1:") and lines[1].startswith("websocket:  ws://")
        assert lines[2] == f"OSC out:    127.0.0.1:{target.getsockname()[1]} (/daam/…)"
        assert wire.osc_in is None  # osc_in_port 0: no OSC control
        wire.send_osc_status("idle", "vj", "live")
        got = {}
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            data = target.recv(65536)
            for m in _messages(data):
                got[m.address] = m.params
        assert got["/daam/status"] == ["idle", "vj", "live"] and got["/daam/selected"] == [0]
    finally:
        port = wire.websocket.port
        wire.close(drain=True)
        target.close()
    with pytest.raises(OSError):  # closed: the port no longer accepts
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def _messages(data: bytes):
    from pythonosc.osc_bundle import OscBundle

    if OscBundle.dgram_is_bundle(data):
        for item in OscBundle(data):
            yield item
    else:
        yield OscMessage(data)
