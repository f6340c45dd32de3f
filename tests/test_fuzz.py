"""Property-based input fuzzing: no OSC datagram and no websocket message kills the live server.

The server runs the tiny built-in model with one-step runs, so fuzzed prompts that happen to
be valid really generate.  After every example the receiver thread must be alive and (for the
websocket) the same connection must answer; at the end a full round trip must still work.
"""

from __future__ import annotations

import json
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder

from bridge.control import KINDS, OSC_CONTROLS, SETTING_NAMES
from tests._live import OscCollector, WsClient, live_session

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


@pytest.fixture(scope="module")
def server(tiny_engine):
    out = OscCollector()
    with live_session(tiny_engine, osc_out=[out.target], steps=1) as session:
        yield session, out
    out.close()


osc_scalars = st.one_of(
    st.integers(-(2**31), 2**31 - 1), st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.text(max_size=40), st.binary(min_size=1, max_size=40), st.booleans(), st.none(),
)
osc_addresses = st.one_of(st.sampled_from(["/daam" + a for a in OSC_CONTROLS]),
                          st.text(min_size=1, max_size=30).map(lambda s: "/" + s.replace("\x00", "")))


def _osc_message(address: str, args: list) -> bytes:
    builder = OscMessageBuilder(address)
    for a in args:
        builder.add_arg(a)
    return builder.build().dgram


@st.composite
def osc_datagrams(draw):
    kind = draw(st.sampled_from(["message", "bundle", "bytes", "truncated"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    msgs = [_osc_message(draw(osc_addresses), draw(st.lists(osc_scalars, max_size=4)))
            for _ in range(draw(st.integers(1, 3)))]
    if kind == "message":
        return msgs[0]
    if kind == "truncated":
        cut = draw(st.integers(0, max(len(msgs[0]) - 1, 0)))
        return msgs[0][:cut]
    from pythonosc.osc_message import OscMessage

    bundle = OscBundleBuilder(IMMEDIATELY)
    for m in msgs:
        bundle.add_content(OscMessage(m))
    return bundle.build().dgram


@FUZZ
@given(data=osc_datagrams())
def test_fuzzed_osc_never_kills_the_receiver(server, data):
    session, _ = server
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(data, ("127.0.0.1", session.osc_in.port))
    assert session.osc_in._thread.is_alive()
    assert session.runner._thread.is_alive()


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6,
)
field_names = st.sampled_from([*SETTING_NAMES, "size", "word", "name", "frames", "words", "dtype", "meta", "x"])


@st.composite
def ws_messages(draw):
    kind = draw(st.sampled_from(["control", "text", "binary", "json"]))
    if kind == "text":
        return draw(st.text(max_size=200))
    if kind == "binary":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(draw(json_values))
    msg = {"type": draw(st.one_of(st.sampled_from([k for k in KINDS if k != "preset"]), st.text(max_size=10)))}
    msg.update(draw(st.dictionaries(field_names, json_values, max_size=3)))
    text = json.dumps(msg)
    return text.replace("1.0e+", "1e+") if draw(st.booleans()) else text.replace("0.5", "NaN")


@pytest.fixture(scope="module")
def ws_client(server):
    session, _ = server
    client = WsClient(session.websocket.url)
    yield client
    client.close()


@FUZZ
@given(message=ws_messages())
def test_fuzzed_websocket_messages_get_an_answer_and_never_kill_the_server(server, ws_client, message):
    ws_client.send(message)
    # every message is answered: an error, or the status that follows an applied control
    reply = ws_client.until(lambda m: isinstance(m, dict) and m["type"] in ("error", "status"), timeout=30)
    if reply["type"] == "error":
        assert reply["message"] and reply["code"]


def test_the_server_still_works_after_the_fuzzing(server, ws_client):
    session, out = server
    ws_client.send({"type": "resume"})
    ws_client.send({"type": "subscribe", "frames": ["maps"], "words": "all", "dtype": "uint8", "meta": True})
    ws_client.send({"type": "prompt", "prompt": "after the storm", "steps": 1, "seed": 1, "width": 64, "height": 64,
                    "guidance": 7.5, "negative_prompt": ""})
    end = ws_client.until(lambda m: isinstance(m, dict) and m["type"] == "run_end"
                          and m["run_id"] == session.current_run.run_id and session.current_run.prompt == "after the storm",
                          timeout=60)
    assert end["status"] == "completed"
    assert out.wait_for(lambda m: ["/daam/run/prompt", ["after the storm"]] in [[a, p] for a, p in m], 10)
