"""Property-based input fuzzing: no OSC datagram and no websocket message kills the live server.

The server runs the tiny built-in model with one-step runs, so fuzzed prompts that happen to
be valid really generate.  After every example the receiver thread must be alive and (for the
websocket) the same connection must answer; at the end a full round trip must still work.
"""

from __future__ import annotations

import json
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.control import KINDS, OSC_CONTROLS, SETTING_NAMES
from bridge.presets import list_presets
from tests._fuzz import fuzz_settings
from tests._live import OscCollector, WsClient, live_session



SHIPPED = set(list_presets())


@pytest.fixture(scope="module")
def server(tiny_engine):
    out = OscCollector()
    with live_session(tiny_engine, osc_out=[out.target], steps=1) as session:
        yield session, out
    out.close()


osc_scalars = st.one_of(
    st.integers(-(2**31), 2**31 - 1), st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.text(max_size=40), st.text(st.characters(codec=None, categories=["Cs"]), min_size=1, max_size=3),
    st.binary(min_size=1, max_size=40), st.booleans(), st.none(),
)
osc_addresses = st.one_of(st.sampled_from(["/daam" + a for a in OSC_CONTROLS]),
                          st.text(min_size=1, max_size=30).map(lambda s: "/" + s.replace("\x00", "")))


IMMEDIATE_TIMETAG = struct.pack(">Q", 1)  # OSC's "now"


def _osc_string(text: str) -> bytes:
    raw = text.encode("utf-8", "surrogatepass") + b"\x00"  # a lone surrogate stays: invalid UTF-8 on the wire
    return raw + b"\x00" * (-len(raw) % 4)


def _osc_message(address: str, args: list) -> bytes:
    """An OSC message laid out by hand (python-osc's builder re-parses what it builds, and
    refuses the odd strings the fuzzer wants to send)."""
    tags, data = ",", b""
    for a in args:
        if a is True or a is False or a is None:
            tags += {True: "T", False: "F", None: "N"}[a]
        elif isinstance(a, int):
            tags, data = tags + "i", data + struct.pack(">i", a)
        elif isinstance(a, float):
            tags, data = tags + "f", data + struct.pack(">f", a)
        elif isinstance(a, str):
            tags, data = tags + "s", data + _osc_string(a)
        else:
            tags, data = tags + "b", data + struct.pack(">i", len(a)) + a + b"\x00" * (-len(a) % 4)
    return _osc_string(address) + _osc_string(tags) + data


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
    # laid out by hand: python-osc's builder re-parses its contents, and fuzzed ones may not parse
    return b"#bundle\x00" + IMMEDIATE_TIMETAG + b"".join(struct.pack(">i", len(m)) + m for m in msgs)


@fuzz_settings(1200)
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


def _surrogate(draw) -> str:
    return "\\u%04x" % draw(st.integers(0xD800, 0xDFFF))  # as JSON spells it: a lone UTF-16 half


@st.composite
def hostile_messages(draw):
    """What once broke the server: lone surrogates anywhere, deep nesting, oversize fields,
    preset names that are paths."""
    kind = draw(st.sampled_from(["surrogate", "nesting", "oversize", "preset"]))
    if kind == "surrogate":
        where = draw(st.sampled_from(["type", "key", "prompt", "negative_prompt", "id", "name"]))
        text = draw(st.text(max_size=10)).replace("\\", "").replace('"', "") + _surrogate(draw)
        if where == "type":
            return '{"type":"%s"}' % text
        if where == "key":
            return '{"type":"set","%s":1}' % text
        kind_for = {"prompt": "prompt", "negative_prompt": "set", "id": "status", "name": "preset"}[where]
        return '{"type":"%s","%s":"%s"}' % (kind_for, where, text)
    if kind == "nesting":
        depth = draw(st.integers(1, 5000))
        return '{"type":"%s","seed":%s%s}' % (draw(st.sampled_from(["set", "subscribe", "x"])), "[" * depth, "]" * depth)
    if kind == "oversize":
        size = draw(st.integers(1000, 300_000))
        return '{"type":"%s","%s":1}' % (draw(st.sampled_from(["set", "zz"])), "z" * size)
    name = draw(st.one_of(st.sampled_from(["/etc/passwd", "../presets/live", "..", "live.toml", "C:\\boot.ini",
                                           "presets/live", "~/x", "live\u0000"]), st.text(max_size=80)))
    return json.dumps({"type": "preset", "name": name})


@st.composite
def ws_messages(draw):
    kind = draw(st.sampled_from(["control", "text", "binary", "json", "hostile"]))
    if kind == "hostile":
        return draw(hostile_messages())
    if kind == "text":
        return draw(st.text(max_size=200))
    if kind == "binary":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(draw(json_values))
    msg = {"type": draw(st.one_of(st.sampled_from(KINDS), st.text(max_size=10)))}
    msg.update(draw(st.dictionaries(field_names, json_values, max_size=3)))
    text = json.dumps(msg)
    return text.replace("1.0e+", "1e+") if draw(st.booleans()) else text.replace("0.5", "NaN")


@pytest.fixture(scope="module")
def ws_client(server):
    session, _ = server
    client = WsClient(session.websocket.url)
    yield client
    client.close()


@fuzz_settings(1200)
@given(message=ws_messages())
def test_fuzzed_websocket_messages_get_an_answer_and_never_kill_the_server(server, ws_client, message):
    ws_client.send(message)
    # every message is answered: an error, or the status that follows an applied control
    reply = ws_client.until(lambda m: isinstance(m, dict) and m["type"] in ("error", "status"), timeout=30)
    if reply["type"] == "error":  # one sentence, short, whatever was sent
        assert reply["code"] and reply["message"] and "\n" not in reply["message"] and len(reply["message"]) <= 600
    assert server[0].preset in SHIPPED  # no message switched to anything but a shipped preset


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
