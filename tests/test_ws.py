"""Websocket sink and control over real sockets, with real runs of the tiny built-in model."""

from __future__ import annotations

import base64
import os
import socket
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bridge import protocol as P
from bridge.errors import UserError
from bridge.sinks.websocket import WebSocketSink
from tests._live import WsClient, is_json, live_session, wait_for


def test_a_run_streams_frames_and_metadata_in_order(tiny_engine, collect):
    with live_session(tiny_engine, steps=3) as session:
        session.bus.add(collect)
        client = WsClient(session.websocket.url)
        hello = client.recv()
        assert hello["type"] == "hello" and hello["protocol"] == 1 and "live" in hello["presets"]
        client.send({"type": "prompt", "prompt": "a red apple on a table", "seed": 5})
        end = client.until(is_json("run_end"))
        client.close()
    assert end["status"] == "completed" and end["steps_done"] == 3
    start = client.json("run_start")[0]
    assert start["words"] == ["a", "red", "apple", "on", "a", "table"] and start["seed"] == 5
    assert start["run"] == P.run_code(start["run_id"]) == P.run_code(collect.start.run_id)
    # per step: maps, cumulative, preview, then the step's JSON; then final image and run_end
    kinds = [m.type_name if isinstance(m, P.Frame) else m["type"] for m in client.received]
    body = kinds[kinds.index("run_start") + 1:]
    body = [k for k in body if k != "status"]
    assert body == ["maps", "cumulative", "preview", "step"] * 3 + ["final", "run_end"]
    for frame, sent_maps, sent_cum, preview in zip(collect.frames, client.frames("maps"), client.frames("cumulative"),
                                                   client.frames("preview")):
        assert sent_maps.step == frame.step and sent_maps.total == 3 and sent_maps.first_word == 0
        assert sent_maps.data.dtype == np.uint8 and sent_maps.data.shape == frame.maps.shape
        assert np.array_equal(sent_maps.data, P.convert_maps(frame.maps, P.UINT8))
        assert np.array_equal(sent_cum.data, P.convert_maps(frame.cumulative, P.UINT8))
        assert np.array_equal(preview.data, frame.preview)
    steps = client.json("step")
    assert [s["step"] for s in steps] == [0, 1, 2]
    assert all(len(s["stats"]) == 6 and sum(s["mass"]) == pytest.approx(1.0) for s in steps)
    assert np.array_equal(client.frames("final")[0].data, collect.end.image)


def test_selected_word_subscription_gets_one_texture_per_step(tiny_engine, collect):
    with live_session(tiny_engine, steps=3) as session:
        session.bus.add(collect)
        td = WsClient(session.websocket.url)  # what a TouchDesigner Script TOP asks for
        raw = WsClient(session.websocket.url)
        td.send({"type": "subscribe", "frames": ["maps"], "words": "selected", "dtype": "uint8", "meta": False})
        raw.send({"type": "subscribe", "frames": ["cumulative"], "words": 1, "dtype": "float32"})
        td.until(lambda m: isinstance(m, dict) and m["type"] == "status" and m["subscription"]["meta"] is False)
        raw.until(lambda m: isinstance(m, dict) and m["type"] == "status" and m["subscription"]["dtype"] == "float32")
        td.send({"type": "prompt", "prompt": "a red apple", "steps": 3})
        td.until(is_json("run_start"))
        td.send({"type": "select", "word": "apple"})
        td.until(is_json("run_end"))
        # the selection shows at once: on the next step, or re-sent from the last one if the run has ended
        if td.frames()[-1].first_word != 2:
            td.until(lambda m: isinstance(m, P.Frame) and m.first_word == 2)
        raw.until(is_json("run_end"))
        td.close()
        raw.close()
    frames = td.frames()
    assert len(frames) >= 3 and all(f.type_name == "maps" and f.data.shape == (1, 64, 64) for f in frames)
    assert td.json("step") == []  # meta off: binary only
    last = frames[-1]
    assert last.first_word == 2 and last.step == 2  # "apple" selected during the run or re-sent after it
    assert np.array_equal(last.data[0], P.convert_maps(collect.frames[-1].maps, P.UINT8)[2])
    floats = raw.frames("cumulative")
    assert [f.step for f in floats] == [0, 1, 2] and all(f.first_word == 1 for f in floats)
    assert np.array_equal(floats[-1].data[0], collect.frames[-1].cumulative[1].astype(np.float32))
    assert raw.frames("maps") == [] and raw.frames("preview") == []


def _stalled_socket(port: int) -> socket.socket:
    """A websocket client that completes the handshake and then never reads again."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # tiny window: the server's writes back up fast
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    response = b""
    while b"\r\n\r\n" not in response:
        response += s.recv(1)
    assert b" 101 " in response.split(b"\r\n")[0]
    # ask for the largest frames (a masked text frame, as clients must send), then never read
    payload = b'{"type":"subscribe","dtype":"float32"}'
    mask = os.urandom(4)
    s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    return s


def test_a_stalled_client_does_not_delay_another(tiny_engine):
    with live_session(tiny_engine, steps=12) as session:
        stalled = _stalled_socket(session.websocket.port)
        fast = WsClient(session.websocket.url)
        fast.send({"type": "subscribe", "dtype": "float32"})
        fast.send({"type": "prompt", "prompt": "a lighthouse on a cliff at dusk"})
        end = fast.until(is_json("run_end"), timeout=120)
        assert end["status"] == "completed"
        # every step reached the fast client although the stalled one has read nothing since the handshake
        assert [s["step"] for s in fast.json("step")] == list(range(12))
        clients = list(session.websocket.clients)
        stalled_client = next(c for c in clients if c.peer.endswith(str(stalled.getsockname()[1])))
        assert stalled_client.dropped > 0
        fast_client = next(c for c in clients if c is not stalled_client)
        assert fast_client.dropped == 0
        fast.close()
        stalled.close()


def test_a_client_that_reads_nothing_is_dropped_and_shutdown_does_not_wait_for_it(caplog):
    from bridge.frames import StepFrame

    sink = WebSocketSink("127.0.0.1", 0, stall_timeout=1.0).start()
    try:
        stalled = _stalled_socket(sink.port)
        # the server registers it on its own loop
        assert wait_for(lambda: sink.clients, 10), "the stalled client never finished its handshake"
        maps = np.ones((7, 64, 64), np.float16)
        for i in range(20):  # ~8 MB of float32 frames: far more than the socket buffers hold
            sink.on_step(StepFrame("r", i, 20, 1.0, "noise", (1.0, 0.0, 0.0), tuple("abcdefg"), maps, maps,
                                   (1 / 7,) * 7, np.zeros((256, 256, 3), np.uint8), 0.0))
        assert wait_for(lambda: not sink.clients, 10, poll=0.05) and "read nothing for 1 s; closing it" in caplog.text
        stalled.close()
    finally:
        t0 = time.monotonic()
        sink.close()
        assert time.monotonic() - t0 < 5 and not sink.alive


def test_a_client_that_falls_behind_gets_the_newest_step():
    """A real client stops reading while 20 large steps go out, then reads again: it has
    skipped steps (counted), never the last one, and the run's end arrived whole."""
    from websockets.sync.client import connect

    from bridge.frames import RunEnd, StepFrame

    sink = WebSocketSink("127.0.0.1", 0).start()
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
        sock.connect(("127.0.0.1", sink.port))
        # max_queue=1: the client's library stops reading the socket until recv() is called
        ws = connect(sink.url, sock=sock, max_size=None, max_queue=1)
        ws.send('{"type":"subscribe","dtype":"float32","id":"sub"}')
        while P.decode_message(ws.recv(10)).get("id") != "sub":  # hello, status, then the answer
            pass
        maps = np.ones((7, 64, 64), np.float16)

        def publish(i):  # ~0.4 MB per step as float32: a few fill every buffer on the way
            sink.on_step(StepFrame("r", i, 20, 1.0, "noise", (1.0, 0.0, 0.0), tuple("abcdefg"), maps, maps,
                                   (1 / 7,) * 7, np.zeros((256, 256, 3), np.uint8), 0.0))
            fanned_out = threading.Event()
            sink.server.call(fanned_out.set)  # the loop runs callbacks in order: the step has been fanned out
            assert fanned_out.wait(10)

        [state] = sink.clients
        for i in range(3):
            publish(i)
        assert wait_for(lambda: state.in_flight, 10)  # the writer waits for the stalled socket
        for i in range(3, 20):  # each step arrives while a batch is stuck on its way
            publish(i)
        sink.on_run_end(RunEnd("r", "completed", 20, 1.0))
        steps, end = [], None
        while end is None:
            m = P.decode_message(ws.recv(30))
            if isinstance(m, dict) and m["type"] == "step":
                steps.append(m["step"])
            elif isinstance(m, dict) and m["type"] == "run_end":
                end = m
        assert state.dropped > 0 and len(steps) + state.dropped == 20
        assert steps == sorted(steps) and steps[-1] == 19  # newest wins: the last step is never the one skipped
        assert end["steps_done"] == 20
        ws.send('{"type":"status","id":"last"}')  # read up to its answer: nothing left unread, a clean close
        while P.decode_message(ws.recv(30)).get("id") != "last":
            pass
        ws.close()
    finally:
        sink.close()


def _frames(buf: bytes) -> list[tuple[int, int, bytes]]:
    """Split raw server bytes into (first byte, length code, payload) per RFC 6455 frame."""
    out, i = [], 0
    while i + 2 <= len(buf):
        assert buf[i + 1] & 0x80 == 0, "server frames are never masked"
        n, head = buf[i + 1] & 0x7F, 2
        if n == 126:
            n, head = int.from_bytes(buf[i + 2:i + 4], "big"), 4
        elif n == 127:
            n, head = int.from_bytes(buf[i + 2:i + 10], "big"), 10
        if i + head + n > len(buf):
            break
        out.append((buf[i], buf[i + 1] & 0x7F, buf[i + head:i + head + n]))
        i += head + n
    return out


def test_every_message_is_one_unmasked_unfragmented_frame_with_the_shortest_length():
    """What TouchDesigner's and the browser's parsers rely on, checked on the raw bytes."""
    from bridge.frames import RunEnd, StepFrame

    sink = WebSocketSink("127.0.0.1", 0).start()
    try:
        raw = _stalled_socket(sink.port)  # subscribes to float32; this test reads everything
        words = tuple("abcdefghijk")
        maps = np.ones((11, 64, 64), np.float16)  # 11 × 64 × 64 float32: a 16-bit length
        sink.on_step(StepFrame("r", 0, 1, 1.0, "noise", (1.0, 0.0, 0.0), words, maps, maps, (1 / 11,) * 11,
                               np.zeros((256, 256, 3), np.uint8), 0.0))  # 196 KiB preview: a 64-bit length
        sink.on_run_end(RunEnd("r", "completed", 1, 1.0, np.zeros((8, 8, 3), np.uint8)))  # a 7-bit length
        buf = b""
        raw.settimeout(30)
        while b'"type":"run_end"' not in buf:
            buf += raw.recv(1 << 20)
        raw.close()
    finally:
        sink.close()
    frames = _frames(buf)
    for first, code, payload in frames:
        assert first in (0x81, 0x82)  # FIN set, one frame per message: text (JSON) or binary
        assert code == (len(payload) if len(payload) < 126 else 126 if len(payload) < 1 << 16 else 127)
        message = P.decode_message(payload.decode() if first == 0x81 else payload)
        assert isinstance(message, dict) == (first == 0x81)
    codes = {code for _, code, _ in frames}
    assert {126, 127} <= codes and any(c < 126 for c in codes)


def test_token_required_off_loopback(tiny_engine, tmp_path):
    with pytest.raises(UserError, match="--token"):
        WebSocketSink("0.0.0.0", 0)
    (tmp_path / "index.html").write_text("<h1>viewer</h1>")
    sink = WebSocketSink("0.0.0.0", 0, token="s3cret", web_root=tmp_path).start()
    try:
        base = f"127.0.0.1:{sink.port}"
        with pytest.raises(InvalidStatus) as info:  # refused at the upgrade, the reason in the body
            WsClient(f"ws://{base}/")
        assert info.value.response.status_code == 403 and b"token" in info.value.response.body
        ok = WsClient(f"ws://{base}/?token=s3cret")
        assert ok.recv()["type"] == "hello"
        ok.close()
        # the viewer's files are not secret: the page passes its ?token= on to the websocket
        assert urllib.request.urlopen(f"http://{base}/", timeout=10).read() == b"<h1>viewer</h1>"
    finally:
        sink.close()


def test_static_viewer_is_served_on_the_same_port(tmp_path):
    (tmp_path / "index.html").write_text("<h1>viewer</h1>")
    (tmp_path / "app.js").write_text("console.log(1)")
    (tmp_path.parent / "secret.txt").write_text("no")
    sink = WebSocketSink("127.0.0.1", 0, web_root=tmp_path).start()
    try:
        base = f"http://127.0.0.1:{sink.port}"
        assert urllib.request.urlopen(base + "/", timeout=10).read() == b"<h1>viewer</h1>"
        with urllib.request.urlopen(base + "/app.js", timeout=10) as js:
            assert js.headers["Content-Type"] == "text/javascript" and js.read() == b"console.log(1)"
        for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/missing.css"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(base + path, timeout=10)
            assert err.value.code == 404
            err.value.close()  # an open HTTP connection would hold the server's shutdown
        client = WsClient(sink.url)  # and the websocket on the same port
        assert client.recv()["type"] == "hello"
        client.close()
    finally:
        sink.close()


def test_oversize_and_garbage_get_specific_errors():
    sink = WebSocketSink("127.0.0.1", 0, web_root=None).start()
    try:
        client = WsClient(sink.url)
        client.send("x" * 300_000)
        assert client.until(is_json("error"))["code"] == "too_large"
        client.send(b"\x00\x01binary")
        assert client.until(is_json("error"))["code"] == "bad_message"
        client.send({"type": "subscribe", "dtype": "int8"})
        err = client.until(is_json("error"))
        assert err["code"] == "invalid_value" and "dtype" in err["message"]
        client.send({"type": "prompt", "prompt": "a cat"})  # no controller on a bare sink
        assert client.until(is_json("error"))["code"] == "unknown_type"
        client.send({"type": "status"})
        assert client.until(is_json("status"))["state"] == "idle"  # still connected and answering
        client.send("y" * (2**20 + 10))  # beyond the websocket limit: closed with 1009
        with pytest.raises(ConnectionClosed) as info:
            client.until(lambda m: False, timeout=10)
        assert info.value.rcvd.code == 1009
        again = WsClient(sink.url)  # the server itself is fine
        assert again.recv()["type"] == "hello"
        again.close()
    finally:
        sink.close()


def test_every_control_is_answered_once_and_the_answer_carries_its_id(tiny_engine):
    """A client tells its answers apart by the ``id`` it sent; state changes come once each."""
    with live_session(tiny_engine, steps=3) as session:
        client = WsClient(session.websocket.url)
        other = WsClient(session.websocket.url)
        client.until(is_json("status"))
        client.send({"type": "set", "seed": 11, "id": 1})
        answer = client.until(lambda m: isinstance(m, dict) and "id" in m)
        assert answer["type"] == "status" and answer["id"] == 1 and answer["settings"]["seed"] == 11
        client.send({"type": "set", "steps": -3, "id": "bad-steps"})
        answer = client.until(lambda m: isinstance(m, dict) and "id" in m)
        assert (answer["type"], answer["code"], answer["id"]) == ("error", "invalid_value", "bad-steps")
        client.send({"type": "subscribe", "frames": ["final"], "id": "sub"})
        assert client.until(lambda m: isinstance(m, dict) and "id" in m)["subscription"]["frames"] == ["final"]
        client.send({"type": "prompt", "prompt": "a red apple", "id": "go"})
        client.until(is_json("run_end"))
        client.until(is_json("status", state="idle"))
        client.send({"type": "status", "id": "after"})
        client.until(is_json("status", id="after"))
        other.until(is_json("status", state="idle"))
        client.close()
        other.close()
    replies = [m for m in client.json() if "id" in m]
    assert [m["id"] for m in replies] == [1, "bad-steps", "sub", "go", "after"]
    assert all("id" not in m for m in other.json())  # an answer goes to its sender only
    statuses = client.json("status")
    bare = [{k: v for k, v in m.items() if k != "id"} for m in statuses]
    assert all(a != b for a, b, m in zip(bare, bare[1:], statuses[1:]) if "id" not in m)  # none repeats unasked
    kinds = [m["type"] for m in client.json()]
    after_prompt = kinds[kinds.index("status", [m.get("id") for m in client.json()].index("go")):]
    # the answer to the prompt, then at most the two changes a start brings (running, the new run_id)
    assert after_prompt.index("run_start") <= 3
    end = kinds.index("run_end")
    assert [m.get("state") for m in client.json()[end + 1:]] == ["idle", "idle"]  # the change once, then the answer
