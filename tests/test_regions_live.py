"""Self-attention regions on the live bridge: set by websocket, OSC, preset or command line,
changed mid-run, refused in one sentence.  Real sockets on loopback, the tiny built-in model."""

from __future__ import annotations

import pytest
from pythonosc.udp_client import SimpleUDPClient

from bridge.presets import PresetError, apply_overrides, defaults
from bridge.protocol import Frame
from tests._live import answer, WsClient, greeted_client, is_json, live_session, wait_for


@pytest.fixture(scope="module")
def server(tiny_engine):
    with live_session(tiny_engine, steps=2) as session:
        yield session


@pytest.fixture
def client(server):
    with greeted_client(server) as c:
        yield c
        c.send({"type": "regions", "regions": []})  # the next test starts without regions


def test_regions_set_over_the_websocket_give_one_self_map_per_region_each_step(server, client):
    reply = answer(client, {"type": "regions", "regions": [{"id": "hat", "box": [8, 8, 24, 24]}, {"pixel": [40, 40]}]}, 1)
    assert reply["type"] == "status" and reply["regions"] == [{"id": "hat", "box": [8.0, 8.0, 24.0, 24.0]},
                                                              {"id": "r1", "pixel": [40.0, 40.0]}]
    client.send({"type": "prompt", "prompt": "a red square"})
    end = client.until(is_json("run_end"), 120)
    assert end["status"] == "completed"
    run = [m for m in client.received if isinstance(m, Frame) and m.type == 5 and m.run == end["run"]]
    assert [f.step for f in run] == [0, 1] and all(f.data.shape[0] == 2 and f.type_name == "self" for f in run)
    steps = [m for m in client.json("step") if m["run_id"] == end["run_id"]]
    assert all([r["id"] for r in m["regions"]] == ["hat", "r1"] for m in steps)


@pytest.mark.parametrize("regions, words", [
    ([{"box": [8, 8, 24]}], "a box region takes 4 numbers"),
    ([{"ring": [1, 2]}], 'exactly one of "pixel"'),
    ([{"pixel": [100, 10]}], "reaches outside the 64×64 image"),
    ([{"pixel": [i, i]} for i in range(9)], "at most 8 regions"),
    ("box:1,2,3,4", "regions is a list"),
])
def test_bad_regions_are_refused_in_one_sentence_and_change_nothing(server, client, regions, words):
    before = server.regions
    reply = answer(client, {"type": "regions", "regions": regions}, 2)
    assert reply["type"] == "error" and words in reply["message"] and "\n" not in reply["message"], reply
    assert server.regions == before


def test_osc_out_carries_each_regions_statistics(tiny_engine):
    from tests._live import OscCollector

    out = OscCollector()
    try:
        with live_session(tiny_engine, steps=2, osc_out=[out.target], regions=["box:0,0,32,32", "pixel:50,50"]) as s:
            c = WsClient(s.websocket.url)
            c.send({"type": "prompt", "prompt": "a red square"})
            assert out.wait_for(lambda m: sum(a == "/daam/region/1" for a, _ in m) == 2, 60)
            c.close()
        assert out.addresses("/daam/regions") == [["r0", "r1"], ["r0", "r1"]]
        first, second = out.addresses("/daam/region/0")
        assert len(first) == 6 and 0 <= first[2] <= 1 and 0 <= first[3] <= 1  # mass, peak, x, y, spread, change
        mass = [out.addresses(f"/daam/region/{i}")[0][0] for i in (0, 1)]
        assert abs(sum(mass) - 1) < 1e-5 and first[5] == 0 and second[5] > 0  # change from the second step on
    finally:
        out.close()


def test_osc_sets_and_clears_regions(server):
    osc = SimpleUDPClient("127.0.0.1", server.osc_in.port)
    osc.send_message("/daam/regions", ["box:0,0,32,32", "pixel:50,10"])
    assert wait_for(lambda: [r.shape for r in server.regions] == ["box", "pixel"], 10)
    osc.send_message("/daam/regions", [])
    assert wait_for(lambda: server.regions == (), 10)


def test_regions_changed_mid_run_apply_from_the_next_step(tiny_engine):
    with live_session(tiny_engine, steps=40) as session:
        c = WsClient(session.websocket.url)
        try:
            c.until(is_json("status"), 30)
            c.send({"type": "regions", "regions": [{"id": "first", "pixel": [10, 10]}]})
            c.send({"type": "prompt", "prompt": "a red square"})
            c.until(lambda m: isinstance(m, dict) and m.get("type") == "step" and m.get("regions"), 60)
            c.send({"type": "regions", "regions": [{"id": "second", "box": [30, 30, 60, 60]}, {"id": "third", "pixel": [5, 5]}]})
            later = c.until(lambda m: isinstance(m, dict) and m.get("type") == "step"
                            and [r["id"] for r in m.get("regions", ())] == ["second", "third"], 120)
            assert later["step"] < 39  # the same run, not the next one
            c.send({"type": "cancel"})
        finally:
            c.close()


def test_a_preset_or_flag_gives_regions_and_bad_ones_name_the_key():
    values = apply_overrides(defaults(), type("Args", (), {"regions": ["box:0,0,16,16"]})())
    assert values["regions"] == ["box:0,0,16,16"]
    with pytest.raises(PresetError, match=r"\[generation\] regions: a box region takes 4 numbers"):
        apply_overrides(defaults(), type("Args", (), {"regions": ["box:0,0,16"]})())
