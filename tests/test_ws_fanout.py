"""The websocket fan-out without sockets: which batches each client gets, which step survives
when it falls behind, and one answer (with the control's ``id``) per control message."""

from __future__ import annotations

import json

import numpy as np

from bridge import protocol as P
from bridge.frames import RunEnd, RunStart, StepFrame
from bridge.phases import PhaseSchedule
from bridge.sinks.ws.fanout import Batch, ClientState, FanOut
from bridge.sinks.ws.incoming import Incoming

WORDS = ("a", "red", "apple")


def _start():
    return RunStart("r1", "a red apple", "", 0, 8, 7.5, 16, 8, (4, 8), WORDS, ((1,), (2,), (3,)), (), "test", "DDIM",
                    PhaseSchedule())


def _step(i):
    maps = np.zeros((3, 4, 8), np.float16)
    maps[:, 1, 2] = np.arange(1, 4) + i
    return StepFrame("r1", i, 8, 1.0, "noise", (1.0, 0.0, 0.0), WORDS, maps, maps, (0.2, 0.3, 0.5),
                     np.full((8, 16, 3), i, np.uint8), 0.1 * i)


def decoded(batch: Batch) -> list:
    return [P.decode_message(m) for m in batch.messages]


def step_of(batch: Batch) -> int:
    return next(m.step for m in decoded(batch) if isinstance(m, P.Frame))


def test_a_client_behind_gets_the_newest_step_and_counts_the_skipped_ones():
    client = ClientState()
    client.push(Batch(("hello",)))
    assert client.take().messages == ("hello",)  # in flight: the socket is draining slowly
    for i in range(5):
        client.push(Batch((f"step {i}",), droppable=True))
        if i == 2:
            client.push(Batch(("status",)))  # never dropped, keeps its place
    assert [b.messages[0] for b in client.outbox] == ["status", "step 4"]
    assert client.dropped == 4
    client.sent(congested=True)  # that batch had to wait for the socket
    client.push(Batch(("step 5",), droppable=True))  # nothing in flight: waits its turn, drops nothing
    assert [b.messages[0] for b in client.outbox] == ["status", "step 4", "step 5"] and client.dropped == 4
    # the writer comes round: the reply first, then only the newest of the waiting steps
    assert [client.take().messages[0], client.take().messages[0], client.take()] == ["status", "step 5", None]
    assert client.dropped == 5


def test_a_client_that_keeps_up_gets_every_step():
    client = ClientState()
    got = []
    for i in range(5):
        client.push(Batch((f"step {i}",), droppable=True))
        if i % 2:  # two steps before its writer came round, but its socket never backed up
            got.append(client.take().messages[0])
            client.sent()
            got.append(client.take().messages[0])
            client.sent()
    got.append(client.take().messages[0])
    assert got == [f"step {i}" for i in range(5)] and client.dropped == 0


def test_fanout_keeps_run_boundaries_and_the_newest_step_for_a_stalled_client():
    fanout = FanOut()
    fast, stalled = ClientState("fast"), ClientState("stalled")
    fanout.join(fast, {"type": "hello"})
    fanout.join(stalled, {"type": "hello"})
    stalled.take()  # its greeting never finishes going out
    fanout.publish(_start())
    for i in range(6):
        fanout.publish(_step(i))
        while fast.take() is not None:  # the fast client's writer keeps up
            fast.sent()
    fanout.publish(RunEnd("r1", "completed", 6, 0.6, np.zeros((8, 16, 3), np.uint8)))
    assert fast.dropped == 0
    waiting = list(stalled.outbox)
    steps = [b for b in waiting if b.droppable]
    assert [step_of(b) for b in steps] == [5] and stalled.dropped == 5  # newest step wins
    kinds = [m["type"] if isinstance(m, dict) else m.type_name for b in waiting for m in decoded(b)]
    kinds = [k for k in kinds if k != "status"]
    assert kinds == ["run_start", "maps", "cumulative", "preview", "step", "final", "run_end"]


def test_status_is_sent_once_per_change_and_always_in_reply():
    state = {"state": "idle"}
    fanout = FanOut(status_fields=lambda: dict(state))
    client = ClientState()
    fanout.join(client, {"type": "hello"})
    client.outbox.clear()
    fanout.status_all()
    fanout.status_all()
    assert not client.outbox  # nothing changed since the greeting's status
    state["state"] = "running"
    fanout.status_all()
    fanout.status_all()
    assert [json.loads(b.messages[0])["state"] for b in client.outbox] == ["running"]
    fanout.reply_status(client, "q1")  # an answer goes out even when nothing changed
    reply = json.loads(client.outbox[-1].messages[0])
    assert reply["type"] == "status" and reply["id"] == "q1" and reply["state"] == "running"


def test_every_control_gets_one_answer_echoing_its_id():
    seen = []

    def controller(control):
        seen.append(control.kind)
        if control.kind == "cancel":
            raise RuntimeError("boom")

    fanout = FanOut()
    incoming = Incoming(fanout, controller)
    client, other = ClientState(), ClientState()
    fanout.join(client, {"type": "hello"})
    fanout.join(other, {"type": "hello"})
    client.outbox.clear()
    other.outbox.clear()

    def answers():
        out = [json.loads(m) for b in client.outbox for m in b.messages]
        client.outbox.clear()
        return out

    incoming.handle(client, json.dumps({"type": "set", "seed": 3, "id": 7}))
    assert [(a["type"], a.get("id")) for a in answers()] == [("status", 7)] and seen == ["set"]
    incoming.handle(client, json.dumps({"type": "subscribe", "meta": False, "id": "sub-1"}))
    [a] = answers()
    assert a["id"] == "sub-1" and a["subscription"]["meta"] is False
    for message, code in [({"type": "set", "steps": -3, "id": "s"}, "invalid_value"),
                          ({"type": "nope", "id": "s"}, "unknown_type"),
                          ({"type": "cancel", "id": "s"}, "failed"),
                          ({"type": "status", "id": ["no"]}, "invalid_value")]:
        incoming.handle(client, json.dumps(message))
        [a] = answers()
        assert a["type"] == "error" and a["code"] == code, a
        assert a.get("id") == ("s" if code != "invalid_value" or message["id"] == "s" else None)
    incoming.handle(client, "{not json")
    [a] = answers()
    assert a["code"] == "bad_message" and "id" not in a
    assert all("id" not in json.loads(m) for b in other.outbox for m in b.messages)  # ids go to their sender only


def _drain(client: ClientState) -> list:
    """Everything the client has been given, decoded, in order."""
    out = []
    while (batch := client.take()) is not None:
        client.sent()
        out += decoded(batch)
    return out


_FRAME_NAMES = {code: name for name, code in P.frame_types().items()}


def _kinds(messages) -> list:
    return [m.get("type") if isinstance(m, dict) else _FRAME_NAMES[m.type] for m in messages]


def test_a_late_joiner_gets_the_finished_run_its_last_step_and_final_image():
    fanout = FanOut()
    early = ClientState("early")
    fanout.join(early, {"type": "hello"})
    fanout.publish(_start())
    for i in range(8):
        fanout.publish(_step(i))
    image = np.full((8, 16, 3), 200, np.uint8)
    fanout.publish(RunEnd("r1", "completed", 8, 0.8, image))
    everything = _drain(early)

    late = ClientState("late")
    fanout.join(late, {"type": "hello"})
    got = _drain(late)
    assert _kinds(got) == ["hello", "status", "run_start", "maps", "cumulative", "preview", "step", "final", "run_end"]
    frames = [m for m in got if isinstance(m, P.Frame)]
    assert {f.step for f in frames[:3]} == {7}  # the last step, not the first
    assert got[6]["step"] == 7 and got[6]["stats"] == everything[_kinds(everything).index("step") + 7 * 4]["stats"]
    assert np.array_equal(frames[-1].data, image) and got[-1]["status"] == "completed"
    # what the late joiner holds is what the early client held at the end
    assert got[2] == everything[_kinds(everything).index("run_start")]
    assert not early.outbox  # a joiner sends the others nothing


def test_a_client_joining_mid_run_gets_the_current_step_then_the_rest_as_everyone_does():
    fanout = FanOut()
    fanout.publish(_start())
    for i in range(3):
        fanout.publish(_step(i))
    late = ClientState("late")
    fanout.join(late, {"type": "hello"})
    fanout.publish(_step(3))
    got = _drain(late)
    assert _kinds(got)[2:] == ["run_start", "maps", "cumulative", "preview", "step", "maps", "cumulative", "preview", "step"]
    assert [m["step"] for m in got if isinstance(m, dict) and m.get("type") == "step"] == [2, 3]
    assert "final" not in _kinds(got) and "run_end" not in _kinds(got)


def test_a_late_joiner_follows_its_subscription_and_the_selection():
    fanout = FanOut()
    fanout.publish(_start())
    fanout.publish(_step(0))
    fanout.selection.select(2)
    late = ClientState("late")
    late.sub = P.Subscription(frames=("cumulative",), words="selected", dtype="uint8", meta=False)
    fanout.join(late, {"type": "hello"})
    frames = [m for m in _drain(late) if isinstance(m, P.Frame)]
    assert len(frames) == 1 and frames[0].first_word == 2 and frames[0].data.shape[0] == 1


def test_steps_to_clients_already_connected_are_the_same_bytes_with_or_without_a_joiner():
    def run(join_late: bool) -> list:
        fanout = FanOut()
        early = ClientState("early")
        fanout.join(early, {"type": "hello"})
        fanout.publish(_start())
        for i in range(4):
            if join_late and i == 2:
                fanout.join(ClientState("late"), {"type": "hello"})
            fanout.publish(_step(i))
        fanout.publish(RunEnd("r1", "completed", 4, 0.4, None))
        out = []
        while (batch := early.take()) is not None:
            early.sent()
            out += list(batch.messages)
        return out

    assert run(False) == run(True)


def test_a_run_starts_on_its_focus_word_on_the_wire_and_in_the_selection():
    fanout = FanOut()
    client = ClientState()
    fanout.join(client, {"type": "hello"})
    fanout.publish(_start())  # "a red apple": no shape noun, so the first content word
    got = _drain(client)
    start = next(m for m in got if isinstance(m, dict) and m["type"] == "run_start")
    assert start["focus"] == 1 and start["words"][1] == "red"
    assert [m["selected"] for m in got if isinstance(m, dict) and m["type"] == "status"][-1] == 1
    fanout.selection.select(2)  # a pick during the run stays, even if the run is announced again
    fanout.publish(_start())
    assert fanout.selection.index == 2
    fanout.selection.select(0)
    words = ("a", "yellow", "star", "and", "a", "green", "circle")
    fanout.publish(RunStart("r2", " ".join(words), "", 0, 8, 7.5, 16, 8, (4, 8), words, tuple((i,) for i in range(7)),
                            (), "test", "DDIM", PhaseSchedule()))
    assert fanout.selection.index == 2  # the next run starts on its own focus: "star"
    assert [m for m in _drain(client) if isinstance(m, dict) and m["type"] == "run_start"][-1]["focus"] == 2
