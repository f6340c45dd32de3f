"""Hostile input to the live bridge, one test per finding: each message here once broke the
server for everyone, read a file it named, echoed itself at length or failed a run with a
traceback.  Real websocket clients and UDP sockets on loopback, the tiny built-in model.

Every refusal is an ``error`` with one sentence; afterwards the same connection still answers,
a new client still gets its hello, and a run still completes.
"""

from __future__ import annotations

import json
import logging
import socket

import pytest

from bridge.live.ratelimit import PeerBudget
from bridge.presets import PRESETS_DIR
from tests._live import OscCollector, WsClient, greeted_client, live_session, wait_for

ROOT_PATH = str(PRESETS_DIR.parent)  # no reply may name where the server's files are


@pytest.fixture(scope="module")
def server(tiny_engine):
    with live_session(tiny_engine, steps=1) as session:
        yield session


@pytest.fixture
def client(server):
    with greeted_client(server) as c:
        yield c


_ids = iter(range(1, 10**9))


def answer(client: WsClient, message) -> dict:
    """The one answer to ``message`` (matched by the ``id`` it is sent with, when it is an object)."""
    if isinstance(message, dict):
        message = {**message, "id": next(_ids)}
        client.send(message)
        return client.until(lambda m: isinstance(m, dict) and m["type"] in ("error", "status")
                            and m.get("id") == message["id"], 30)
    client.send(message)
    return client.until(lambda m: isinstance(m, dict) and m["type"] in ("error", "status"), 30)


def still_serving(server, client: WsClient) -> None:
    """The same connection answers, a new client is greeted, and a run completes."""
    assert answer(client, {"type": "status"})["type"] == "status"
    fresh = WsClient(server.websocket.url)
    try:
        assert fresh.recv(30)["type"] == "hello"
        # no frames: a client that reads nothing must not fill its receive queue (close would wait)
        assert answer(fresh, {"type": "subscribe", "frames": [], "meta": False})["type"] == "status"
        done = server.runner.runs_done
        fresh.send({"type": "prompt", "prompt": "a red square"})
        assert wait_for(lambda: server.runner.runs_done > done, 120)
        assert server.runner.runs[-1].status == "completed", server.runner.runs[-1]
    finally:
        fresh.close()
    assert wait_for(lambda: len(server.websocket.clients) == 1, 10)  # the fresh one is gone from the list


@pytest.mark.parametrize("message", [
    '{"type":"set","negative_prompt":"\\ud800"}',
    '{"type":"set","prompt":"a \\udfff cat"}',
    '{"type":"prompt","prompt":"\\ud800"}',
    '{"type":"\\ud800"}',
    '{"type":"status","id":"\\ud83d"}',
    '{"type":"set","\\ud800":1}',
], ids=["negative", "set-prompt", "prompt", "type", "id", "key"])
def test_a_lone_surrogate_is_refused_and_breaks_nothing(server, client, message):
    reply = answer(client, message)
    assert reply["type"] == "error" and "lone UTF-16 surrogate" in reply["message"], reply
    assert "request" not in reply or reply["request"] in ("set", "prompt", "status")
    assert server.settings["negative_prompt"] == "" and "\ud800" not in json.dumps(server.status())
    still_serving(server, client)


@pytest.mark.parametrize("depth", [33, 995, 20000])
def test_deep_nesting_is_refused_in_one_sentence(server, client, depth):
    reply = answer(client, '{"type":"set","seed":' + "[" * depth + "]" * depth + "}")
    assert reply["type"] == "error" and "nested more than 32 levels" in reply["message"], reply
    still_serving(server, client)


def test_nesting_within_the_limit_is_parsed_and_judged_on_its_fields(client):
    reply = answer(client, '{"type":"set","seed":' + "[" * 30 + "]" * 30 + "}")
    assert reply["type"] == "error" and reply["message"].startswith("seed must be a whole number"), reply


@pytest.mark.parametrize("field, value", [("dtype", []), ("dtype", {}), ("words", []), ("words", {"a": 1}),
                                          ("frames", {}), ("frames", [[]]), ("meta", [])])
def test_subscribe_with_a_value_of_the_wrong_type_is_refused(server, client, field, value):
    reply = answer(client, {"type": "subscribe", field: value})
    assert reply["type"] == "error" and reply["code"] == "invalid_value" and f'"{field}"' in reply["message"], reply
    still_serving(server, client)


@pytest.mark.parametrize("name", ["/etc/passwd", "../presets/live", "live.toml", "a" * 300, "C:\\x", "live\x00", "é"],
                         ids=["abs", "dotdot", "suffix", "long", "drive", "nul", "unicode"])
def test_a_preset_is_only_a_plain_name_from_the_preset_folders(server, client, name):
    reply = answer(client, {"type": "preset", "name": name})
    assert reply["type"] == "error" and reply["code"] == "unknown_preset", reply
    assert reply["message"].startswith("preset names are 1 to 64 letters"), reply
    assert ROOT_PATH not in reply["message"] and "root:" not in reply["message"] and len(reply["message"]) < 300
    assert server.preset == "live"


def test_an_operator_preset_folder_is_searched_and_a_huge_file_is_refused(tiny_engine, tmp_path):
    folder = tmp_path / "show"
    folder.mkdir()
    (folder / "night.toml").write_text('[generation]\nprompt = "a blue circle at night"\nsteps = 1\n')
    (folder / "huge.toml").write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    (folder / "broken.toml").write_text("[generation\n")
    with live_session(tiny_engine, steps=1, preset_dirs=[str(folder)]) as session:
        c = WsClient(session.websocket.url)
        try:
            hello = c.recv(30)
            assert {"live", "installation", "night", "huge"} <= set(hello["presets"])
            assert answer(c, {"type": "preset", "name": "night"})["type"] == "status"
            assert session.preset == "night" and session.settings["prompt"] == "a blue circle at night"
            huge = answer(c, {"type": "preset", "name": "huge"})
            assert huge["type"] == "error" and "too large for a preset" in huge["message"], huge
            broken = answer(c, {"type": "preset", "name": "broken"})
            assert broken["type"] == "error" and "not valid TOML" in broken["message"], broken
            for reply in (huge, broken):
                assert str(tmp_path) not in reply["message"] and "preset " in reply["message"]
            assert session.preset == "night"
        finally:
            c.close()


def test_a_first_word_over_the_token_limit_is_refused_before_the_run(server, client):
    reply = answer(client, {"type": "prompt", "prompt": "a" * 1000})
    assert reply["type"] == "error" and reply["code"] == "invalid_value", reply
    assert "first word" in reply["message"] and "longer than the text encoder can read" in reply["message"]
    assert len(reply["message"]) < 300
    still_serving(server, client)


def test_a_size_the_cpu_cannot_run_in_reasonable_time_is_refused_with_the_reason(server, client):
    hello_limits = WsClient(server.websocket.url)
    try:
        limits = hello_limits.recv(30)["limits"]
    finally:
        hello_limits.close()
    side = limits["width"]["max"]
    assert side == 512 and limits["height"]["max"] == 512  # tiny model: 8 px per latent pixel, 64×64 positions
    assert answer(client, {"type": "set", "width": side, "height": side})["type"] == "status"
    reply = answer(client, {"type": "prompt", "prompt": "a cat", "width": 2048, "height": 2048})
    assert reply["type"] == "error" and "latent positions" in reply["message"] and "--max-latent" in reply["message"]
    assert server.settings["width"] == side  # the refused prompt changed nothing
    answer(client, {"type": "set", "width": 64, "height": 64})
    still_serving(server, client)


def test_an_oversized_name_is_echoed_short_in_the_reply_and_the_log(server, client, caplog):
    caplog.set_level(logging.INFO)
    reply = answer(client, '{"type":"set","' + "z" * 250_000 + '":1}')
    assert reply["type"] == "error" and reply["code"] == "unknown_field"
    assert len(reply["message"]) < 300 and "(250000 characters)" in reply["message"], reply["message"][:300]
    assert max(len(r.getMessage()) for r in caplog.records) < 1000
    reply = answer(client, '{"type":"' + "q" * 250_000 + '"}')
    assert reply["type"] == "error" and len(json.dumps(reply)) < 400 and "request" not in reply


def test_every_refusal_is_one_sentence(server, client):
    for message in ['{"type":"set","seed":"x"}', '{"type":"nope"}', "not json", '{"type":"preset","name":"nope"}',
                    '{"type":"subscribe","dtype":"int4"}', '{"type":"prompt"}']:
        reply = answer(client, message)
        text = reply["message"]
        assert reply["type"] == "error" and "\n" not in text and "Traceback" not in text, reply
        assert len(text) < 300, text


# --------------------------------------------------------------------------- OSC peers


def _reply_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.2)
    return s


def _replies(sock: socket.socket, until) -> list[bytes]:
    """Datagrams that reach ``sock`` until ``until()`` holds and nothing more arrives for 0.2 s."""
    got = []
    while True:
        try:
            got.append(sock.recv(65535))
        except socket.timeout:
            if until():
                return got


def test_a_preset_switch_over_osc_is_held_to_the_same_rule(tiny_engine):
    from pythonosc.osc_message import OscMessage
    from pythonosc.osc_message_builder import OscMessageBuilder

    out = OscCollector()
    with live_session(tiny_engine, steps=1, osc_out=[out.target]) as session, _reply_socket() as sock:
        msg = OscMessageBuilder("/daam/preset")
        msg.add_arg("/etc/passwd")
        sock.sendto(msg.build().dgram, ("127.0.0.1", session.osc_in.port))
        replies = _replies(sock, lambda: session.osc_in.received >= 1)
        assert [OscMessage(r).params[0] for r in replies] == ["unknown_preset"]
        assert "preset names are 1 to 64 letters" in OscMessage(replies[0]).params[1]
        assert session.preset == "live"
    out.close()


def test_error_replies_to_one_peer_are_rate_limited(tiny_engine):
    from bridge.live.ratelimit import PeerBudget

    out = OscCollector()
    with live_session(tiny_engine, steps=1, osc_out=[out.target]) as session, _reply_socket() as sock:
        budget: PeerBudget = session.osc_in.replies
        for _ in range(200):
            sock.sendto(b"junk", ("127.0.0.1", session.osc_in.port))
        replies = _replies(sock, lambda: session.osc_in.received >= 200)
        # a burst, then the rate: far fewer replies than junk datagrams
        assert budget.burst <= len(replies) < 200 and budget.denied == 200 - len(replies)
        assert session.osc_in.unanswered == budget.denied
        assert len(replies) <= budget.burst + budget.rate * 10  # the 200 datagrams take well under 10 s
    out.close()


def test_a_peer_budget_refills_at_its_rate_and_forgets_the_oldest_peers():
    now = [0.0]
    budget = PeerBudget(rate=2.0, burst=3.0, max_peers=2, clock=lambda: now[0])
    assert [budget.allow("a") for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5  # one token back at 2 per second
    assert [budget.allow("a") for _ in range(2)] == [True, False]
    assert budget.allow("b") and budget.allow("c")  # "a" is forgotten: a fresh burst
    assert list(budget._tokens) == ["b", "c"]
    assert budget.allow("a")


def test_refusals_are_answered_only_to_loopback_and_known_peers():
    """Datagrams from other hosts are fed straight into the receiver's handler (sending from a
    non-loopback address needs a real network); the reply callback records instead of sending,
    so no test traffic leaves loopback."""
    from bridge.live.osc_in import OscControlServer

    sent = []
    osc = OscControlServer("127.0.0.1", 0, handler=lambda control: None,
                           reply=lambda code, message, addr: sent.append(addr[0]),
                           reply_hosts=["192.0.2.7"])
    try:
        for host in ("127.0.0.1", "198.51.100.9", "192.0.2.7", "203.0.113.1"):
            osc.handle_datagram(b"junk", (host, 9000))
        assert sent == ["127.0.0.1", "192.0.2.7"]
        assert osc.unanswered == 2
    finally:
        osc.close()
