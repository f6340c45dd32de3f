"""OSC out and OSC control in, over real UDP sockets on loopback, with the tiny built-in model."""

from __future__ import annotations

import math
import socket
import time

import pytest
from pythonosc.udp_client import SimpleUDPClient

from bridge.bus import Bus
from bridge.control import ControlError, parse_osc_control
from bridge.engine import GenerationRequest
from bridge.errors import UserError
from bridge.sinks.osc import OscSink, parse_target
from tests._live import OscCollector, is_immediate_bundle, live_session


@pytest.fixture
def collectors():
    made = [OscCollector(), OscCollector()]
    yield made
    for c in made:
        c.close()


def test_a_real_run_reaches_two_osc_targets(tiny_engine, collectors):
    a, b = collectors
    sink = OscSink([a.target, (("127.0.0.1", b.port))])
    try:
        end = tiny_engine.generate(GenerationRequest("a red apple on a table", steps=4, seed=1), Bus([sink]))
        assert sink.flush(10)
    finally:
        sink.close()
    assert end.status == "completed"
    for c in (a, b):
        assert c.wait_for(lambda m: any(addr == "/daam/run/end" for addr, _ in m), 10)
        start = c.addresses("/daam/run/start")[0]
        words = c.addresses("/daam/words")[0]
        assert words == ["a", "red", "apple", "on", "a", "table"]
        steps, seed, width, height, n_words, map_h, map_w = start
        assert (steps, seed, n_words) == (4, 1, 6) and all(isinstance(x, int) for x in start)
        assert c.addresses("/daam/run/prompt") == [["a red apple on a table"]]
        assert c.addresses("/daam/run/end") == [[4, 0]] and c.addresses("/daam/run/status") == [["completed"]]
        step_msgs = c.addresses("/daam/step")
        assert [s[:2] for s in step_msgs] == [[i, 4] for i in range(4)]
        assert step_msgs[-1][2] == pytest.approx(1.0)
        phases = c.addresses("/daam/phase")
        assert [p[0] for p in phases] == [0, 1, 2, 2]  # 4 steps: positions .125 .375 .625 .875
        assert [n[0] for n in c.addresses("/daam/phase/name")] == ["noise", "structure", "detail", "detail"]
        for w in c.addresses("/daam/phase/weights"):
            assert len(w) == 3 and math.isclose(sum(w), 1.0, abs_tol=1e-5)
        for i in range(6):
            rows = c.addresses(f"/daam/word/{i}")
            assert len(rows) == 4, f"word {i} sent once per step"
            for mass, peak, x, y, spread, change in rows:
                assert 0 <= mass <= 1 and 0 <= peak <= 1 and 0 <= x <= 1 and 0 <= y <= 1 and 0 <= spread <= 1
                assert 0 <= change <= 1
            assert rows[0][5] == 0.0  # no previous step
        per_step_mass = [sum(c.addresses(f"/daam/word/{i}")[s][0] for i in range(6)) for s in range(4)]
        assert per_step_mass == pytest.approx([1.0] * 4, abs=1e-4)
        # every datagram is a bundle with the IMMEDIATE timetag
        assert c.datagrams and all(is_immediate_bundle(d) for d in c.datagrams)


def test_targets_are_parsed_or_refused_with_one_sentence():
    assert parse_target("127.0.0.1:7000") == ("127.0.0.1", 7000)
    assert parse_target("[::1]:9000") == ("::1", 9000)
    for bad in ("127.0.0.1", "host:port", ":7000", "h:70000"):
        with pytest.raises(UserError, match="host:port"):
            parse_target(bad)


def test_osc_control_parsing():
    assert parse_osc_control("/daam/prompt", ["a cat"]).values == {"prompt": "a cat"}
    assert parse_osc_control("/daam/steps", [20.0]).values == {"steps": 20}
    assert parse_osc_control("/daam/size", [512, 384]).values == {"width": 512, "height": 384}
    assert parse_osc_control("/daam/pause", []).kind == "pause"
    assert parse_osc_control("/daam/pause", [0]) is None  # a TouchDesigner button release
    assert parse_osc_control("/daam/select", ["apple"]).values == {"word": "apple"}
    cases = [
        ("/daam/steps", ["many"], "whole number"),
        ("/daam/steps", [1, 2], "exactly one argument"),
        ("/daam/guidance", [float("nan")], "finite"),
        ("/daam/size", [512], "two numbers"),
        ("/daam/size", [500, 512], "multiple of 8"),
        ("/daam/promt", ["x"], "did you mean '/daam/prompt'"),
        ("/daam/bogus", [], r"'/daam/bogus'; known: /daam/prompt"),  # no far-fetched guess from the shared prefix
        ("/other/prompt", ["x"], "outside /daam/"),
        ("/daam/cancel", ["now"], "button value"),
        ("/daam/prompt", [""], "empty"),
    ]
    for address, args, message in cases:
        with pytest.raises(ControlError, match=message):
            parse_osc_control(address, args)


def test_osc_prompt_starts_a_run_and_bad_messages_get_daam_error(tiny_engine):
    out = OscCollector()
    try:
        with live_session(tiny_engine, osc_out=[out.target], steps=2) as session:
            client = SimpleUDPClient("127.0.0.1", session.osc_in.port)
            client.send_message("/daam/steps", "many")
            client.send_message("/daam/nope", 1.0)
            client.send_message("/daam/prompt", "a blue bird")
            raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            raw.sendto(b"\x00garbage that is not OSC", ("127.0.0.1", session.osc_in.port))
            raw.close()
            assert out.wait_for(lambda m: any(a == "/daam/run/end" for a, _ in m), 60)
            assert out.wait_for(lambda m: len([a for a, _ in m if a == "/daam/error"]) >= 3, 10)
            errors = out.addresses("/daam/error")
            codes = sorted(e[0] for e in errors)
            assert codes == ["bad_message", "invalid_value", "unknown_address"], errors
            assert any("steps must be a whole number" in e[1] for e in errors)
            assert out.addresses("/daam/run/prompt") == [["a blue bird"]]
            assert out.addresses("/daam/run/end") == [[2, 0]]
            # the receiver is still serving: a select by word reaches /daam/selected
            client.send_message("/daam/select", "bird")
            assert out.wait_for(lambda m: ["/daam/selected", [2]] in [[a, p] for a, p in m], 10)
    finally:
        out.close()


def test_osc_control_only_from_allowed_peers(tiny_engine):
    out = OscCollector()
    try:
        with live_session(tiny_engine, osc_out=[out.target], osc_allow=["10.255.255.1"]) as session:
            SimpleUDPClient("127.0.0.1", session.osc_in.port).send_message("/daam/prompt", "a cat")
            deadline = time.monotonic() + 5
            while session.osc_in.refused == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert session.osc_in.refused == 1 and session.osc_in.received == 0
            time.sleep(0.3)
            assert session.runner.runs == [] and session.runner.state == "idle"
    finally:
        out.close()
