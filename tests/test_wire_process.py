"""The websocket server in its own process (--wire-process): same bytes, never in generation's way.

Real processes, a real shared-memory ring, real websocket clients on loopback.  The whole
websocket test suite also runs with every session's server in its own process (the last test).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest

from _live import RawClient, WsClient, is_json, live_session, wait_for
from replay_recordings import REPO
from bridge.bus import Bus
from bridge.errors import UserError
from bridge.frames import StepFrame
from bridge.sinks.framering import FrameRing, RingReader
from bridge.sinks.websocket import WebSocketSink
from bridge.sinks.wire_process import WireProcessSink


def _frame(step: int, words: int = 3, side: int = 16, preview: int = 32) -> StepFrame:
    rng = np.random.default_rng(step)
    maps = rng.random((words, side, side)).astype(np.float16)
    return StepFrame("run-a", step, 10, 900.0 - step, "noise", (1.0, 0.0, 0.0), tuple("abc"[:words]), maps, maps.cumsum(0),
                     (1 / words,) * words, rng.integers(0, 255, (preview, preview, 3), np.uint8), 0.1 * step,
                     {"step": 0.01}, kinds={"self": rng.random((2, side, side)).astype(np.float16)},
                     regions=({"id": "r0", "box": [1.0, 2.0, 3.0, 4.0]},))


def _same(a: StepFrame, b: StepFrame) -> bool:
    plain = ("run_id", "step", "total", "timestep", "phase", "phase_weights", "words", "mass", "elapsed", "timings", "regions")
    return (all(getattr(a, k) == getattr(b, k) for k in plain) and a.kinds.keys() == b.kinds.keys()
            and all(np.array_equal(a.kinds[k], b.kinds[k]) and a.kinds[k].dtype == b.kinds[k].dtype for k in a.kinds)
            and np.array_equal(a.preview, b.preview))


def test_the_ring_carries_every_field_and_skips_when_every_slot_is_held():
    ring, reader = FrameRing(slots=2), RingReader()
    try:
        first, second = ring.put(_frame(0)), ring.put(_frame(1))
        assert ring.put(_frame(2)) is None and ring.skipped == 1  # both slots held: skipped, not waited for
        assert _same(reader.take(first), _frame(0)) and _same(reader.take(second), _frame(1))
        ring.release(first["slot"])
        big = ring.put(_frame(3, words=8, side=256, preview=512))  # larger than the slot: a new, bigger one
        assert big is not None and big["slot"] == first["slot"] and big["name"] != first["name"]
        taken = reader.take(big)
        ring.release(big["slot"])
        assert _same(taken, _frame(3, words=8, side=256, preview=512))
        taken.kinds["maps"][...] = 0  # the receiver's copy is its own
        again = ring.put(_frame(4))
        assert _same(reader.take(again), _frame(4))
    finally:
        reader.close()
        ring.close()


def _steps_seen(messages) -> int:
    return sum(isinstance(m, str) and '"type":"step"' in m for m in messages)


def test_the_wire_process_sends_the_same_bytes_as_the_in_process_sink(tiny_engine, collect):
    from bridge.engine import GenerationRequest

    bus = Bus()
    bus.add(collect)
    tiny_engine.generate(tiny_engine.validate(GenerationRequest("a red apple on a table", seed=3, steps=4)), bus)
    status = lambda: {"state": "idle", "mode": "vj"}  # noqa: E731
    here = WebSocketSink("127.0.0.1", 0, web_root=None, status=status).start()
    there = WireProcessSink("127.0.0.1", 0, web_root=None, status=status).start()
    try:
        clients = [RawClient(here.url), RawClient(there.url)]
        for c in clients:
            c.send({"type": "subscribe", "frames": ["maps", "cumulative", "preview", "final"], "dtype": "float16"})
            assert c.wait(lambda ms: sum('"type":"status"' in m for m in ms if isinstance(m, str)) >= 2)
        # one record at a time, each waited for on both wires: no step is skipped for a busy machine
        for n, event in enumerate(collect.events):
            for sink in (here, there):
                {"RunStart": sink.on_run_start, "StepFrame": sink.on_step, "RunEnd": sink.on_run_end}[type(event).__name__](event)
            if isinstance(event, StepFrame):
                assert all(c.wait(lambda ms: _steps_seen(ms) == event.step + 1) for c in clients)
        assert all(c.wait(lambda ms: any(isinstance(m, str) and '"type":"run_end"' in m for m in ms)) for c in clients)
        ours, theirs = (c.run_messages() for c in clients)
        assert len(ours) == 1 + 4 * 4 + 2 and ours == theirs  # run_start, 4 × (3 frames + step), final, run_end
        assert there.measure()["torch"] is False  # the wire process never imports torch
    finally:
        here.close()
        there.close()


def test_controls_and_the_selection_cross_both_ways(tiny_engine):
    with live_session(tiny_engine, steps=2, wire_process=True) as session:
        client = WsClient(session.websocket.url)
        client.until(is_json("hello"))
        client.send({"type": "prompt", "prompt": "", "id": "empty"})
        err = client.until(is_json("error"))
        assert err["id"] == "empty" and err["message"] == "prompt is empty; send some words to generate from"
        client.send({"type": "prompt", "prompt": "a red apple", "id": 7})
        assert client.until(lambda m: is_json("status")(m) and m.get("id") == 7)
        assert client.until(is_json("run_end"))["status"] == "completed"
        client.send({"type": "select", "word": "apple"})  # from a client: the generation process hears it
        assert wait_for(lambda: session.selection.index == 2, 10)
        session.selection.select(0)  # from OSC or another sink: the client hears it
        assert client.until(lambda m: is_json("status")(m) and m["selected"] == 0)
        client.close()


def test_a_frozen_wire_process_never_holds_up_generation():
    if not hasattr(signal, "SIGSTOP"):
        pytest.skip("needs POSIX signals")
    sink = WireProcessSink("127.0.0.1", 0, web_root=None).start()
    try:
        os.kill(sink._process.pid, signal.SIGSTOP)
        done = threading.Event()

        def publish():  # far more headers than a pipe holds, if they were all sent
            for step in range(2000):
                sink.on_step(_frame(step % 10))
            done.set()

        threading.Thread(target=publish, daemon=True).start()
        assert done.wait(60), "generation waited for a stopped wire process"
        assert sink.ring.skipped >= 2000 - len(sink.ring._slots)
        os.kill(sink._process.pid, signal.SIGCONT)
        assert wait_for(lambda: len(sink.ring._free) == len(sink.ring._slots), 30)  # it catches up
        client = WsClient(sink.url)
        client.until(is_json("hello"))
        sink.on_step(_frame(5))
        assert client.until(is_json("step"))["step"] == 5
        client.close()
    finally:
        if sink.alive:
            os.kill(sink._process.pid, signal.SIGCONT)
        sink.close()


def test_a_port_in_use_is_one_sentence():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UserError, match=rf"^cannot listen on 127\.0\.0\.1:{port} \(.*\); is another bridge running\? choose another --port$"):
            WireProcessSink("127.0.0.1", port, web_root=None).start()


def test_the_wire_process_ends_with_the_generation_process():
    code = ("import os, sys\nfrom bridge.sinks.wire_process import WireProcessSink\n"
            "if __name__ == '__main__':\n"
            "    sink = WireProcessSink('127.0.0.1', 0, web_root=None).start()\n"
            "    print(sink._process.pid, flush=True)\n"
            "    os._exit(0)  # no close, no cleanup: as a crash would leave it\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    pid = int(out.stdout.split()[0])

    def gone():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return _zombie(pid)

    assert wait_for(gone, 30), "the wire process outlived its parent"


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_the_websocket_tests_pass_with_the_server_in_its_own_process():
    env = {**os.environ, "BRIDGE_TEST_WIRE_PROCESS": "1"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_ws.py",
                          "tests/test_ws_edge.py"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
