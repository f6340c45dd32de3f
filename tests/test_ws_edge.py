"""The network edge of the websocket sink: odd HTTP requests, page origins, the token, the
client cap.  Real sockets on loopback, real websocket clients, real headless Chromium.

Every refusal is an HTTP status and one plain sentence; none is a traceback, none stops the
bridge for the clients it admitted.
"""

from __future__ import annotations

import socket
from contextlib import ExitStack
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import InvalidStatus

from bridge.errors import UserError
from bridge.sinks.websocket import WebSocketSink
from tests._browser import browser_page, static_server
from tests._fuzz import fuzz_settings
from tests._live import WsClient, is_json, live_session, wait_for

ROOT = Path(__file__).resolve().parents[1]
WEB_FILES = {p.read_bytes() for p in (ROOT / "web").iterdir() if p.is_file()}
TOKEN = "S3cr3t+&x"


@pytest.fixture(scope="module")
def server(tiny_engine):
    with live_session(tiny_engine, steps=1) as session:
        yield session


def _host_port(session) -> tuple[str, int]:
    host, port = session.websocket.url.split("//")[1].split("/")[0].rsplit(":", 1)
    return host, int(port)


def raw_request(host: str, port: int, request: bytes, timeout: float = 10.0) -> bytes:
    """Send ``request`` as is; the reply up to the server's close (just the head for a 101)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(request)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
            if reply.startswith(b"HTTP/1.1 101 ") and b"\r\n\r\n" in reply:
                break  # a websocket: the server keeps it open
    return reply


def refused(url: str, **kw) -> InvalidStatus:
    """The HTTP refusal a websocket client gets at the upgrade (fails if it is let in)."""
    with pytest.raises(InvalidStatus) as info:
        WsClient(url, **kw).close()
    return info.value


# --------------------------------------------------------------------------- odd HTTP


@pytest.mark.parametrize("path", ["/%00", "/" + "a" * 300, "/%2e%2e/%2e%2e/etc/passwd", "/..%5c..%5cREADME.md"],
                         ids=["nul", "long", "dotdot", "backslash-dotdot"])
def test_odd_http_paths_get_a_plain_refusal(server, path):
    host, port = server.websocket.url.split("//")[1].split("/")[0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    status = int(reply.split(b" ", 2)[1])
    assert status in (400, 403, 404), reply[:200]
    assert b"Traceback" not in reply and b"root:" not in reply


path_chars = st.sampled_from(list("abc./\\%~-_?#&=+;:@!$'()*,[]{}|^`\"<> \t") + ["%00", "%2e", "%2E", "%2f", "%5c", "%ff",
                                                                                 "%", "..", "\x00", "\x7f", "é", "web"])
header_names = st.one_of(st.sampled_from(["Host", "Origin", "Upgrade", "Connection", "Sec-WebSocket-Key",
                                          "Sec-WebSocket-Version", "Cookie", "Content-Length", "Transfer-Encoding"]),
                         st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=20))
header_values = st.one_of(st.sampled_from(["websocket", "Upgrade", "null", "http://evil.example", "13",
                                           "dGhlIHNhbXBsZSBub25jZQ==", "0", "chunked", "x" * 9000]),
                          st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=60))


@fuzz_settings(400)
@given(path=st.lists(path_chars, max_size=40).map(lambda parts: "/" + "".join(parts)),
       headers=st.lists(st.tuples(header_names, header_values), max_size=6))
def test_fuzzed_http_requests_get_a_plain_answer(server, path, headers):
    host, port = _host_port(server)
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", *(f"{k}: {v}" for k, v in headers), "Connection: close"]
    reply = raw_request(host, port, ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"))
    assert b"Traceback" not in reply and b"root:" not in reply
    if not reply:
        return  # the server may hang up on bytes that are not HTTP at all
    status = int(reply.split(b" ", 2)[1])
    assert status in (101, 200, 400, 403, 404, 405, 413, 414, 426, 431, 503), reply[:300]
    if status == 200:  # only the viewer's own files, ever
        assert reply.split(b"\r\n\r\n", 1)[1] in WEB_FILES
    assert server.websocket.alive


def test_the_bridge_still_serves_after_the_fuzzing(server):
    client = WsClient(server.websocket.url)
    client.until(is_json("hello"))
    client.send({"type": "prompt", "prompt": "after the fuzz", "steps": 1})
    assert client.until(is_json("run_end"))["status"] == "completed"
    client.close()


# --------------------------------------------------------------------------- origin


def test_only_the_bridges_own_pages_and_allowed_origins_may_connect(server, caplog):
    host, port = _host_port(server)
    url = server.websocket.url
    for own in (f"http://127.0.0.1:{port}", f"http://localhost:{port}", f"http://[::1]:{port}", None):
        client = WsClient(url, origin=own)  # the viewer in any loopback spelling; TouchDesigner sends none
        assert client.recv()["type"] == "hello"
        client.close()
    for other in ("http://evil.example", f"http://127.0.0.1:{port + 1}", f"https://127.0.0.1:{port}", "null",
                  f"http://localhost.evil.example:{port}"):
        err = refused(url, origin=other)
        assert err.response.status_code == 403 and b"--allow-origin" in err.response.body, other
    assert "is not allowed (--allow-origin)" in caplog.text and "Traceback" not in caplog.text
    # DNS rebinding: a page whose own name now points at 127.0.0.1, connecting to itself
    reply = raw_request(host, port, (f"GET / HTTP/1.1\r\nHost: evil.example:{port}\r\nOrigin: http://evil.example:{port}\r\n"
                                     "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").encode())
    assert reply.startswith(b"HTTP/1.1 403 ")


def test_a_bad_allowed_origin_is_refused_at_start():
    with pytest.raises(UserError, match="not a web origin"):
        WebSocketSink("127.0.0.1", 0, allow_origin=["show-pc"])


PROBE = """<!doctype html><meta charset=utf-8><link rel=icon href='data:,'><title>probe</title>
<script>
  window.outcome = null;
  const ws = new WebSocket(new URLSearchParams(location.search).get("bridge"));
  ws.onopen = () => { window.outcome = "open"; ws.close(); };
  ws.onclose = (ev) => { if (window.outcome === null) window.outcome = "refused " + ev.code; };
</script>"""


def _probe(page, base: str, bridge_url: str) -> str:
    page.goto(f"{base}/probe.html?bridge={bridge_url}")
    page.wait_for_function("window.outcome !== null", timeout=20_000)
    return page.evaluate("window.outcome")


def test_a_page_from_another_origin_is_refused_in_a_real_browser(tiny_engine, tmp_path, caplog):
    (tmp_path / "probe.html").write_text(PROBE)
    with static_server(tmp_path) as other, browser_page() as page:
        with live_session(tiny_engine, steps=1) as session:
            assert _probe(page, other, session.websocket.url).startswith("refused")
            assert f"page origin {other} is not allowed" in caplog.text
            page.goto(session.websocket.http_url)  # the bridge's own viewer still connects
            page.wait_for_function("window.viewer && window.viewer.connection === 'open'", timeout=20_000)
        with live_session(tiny_engine, steps=1, allow_origin=[other]) as session:  # the operator allows it
            assert _probe(page, other, session.websocket.url) == "open"


# --------------------------------------------------------------------------- token


def test_the_token_is_url_encoded_and_checked_at_the_upgrade(tmp_path):
    (tmp_path / "index.html").write_text("<h1>viewer</h1>")
    sink = WebSocketSink("127.0.0.1", 0, token=TOKEN, web_root=tmp_path).start()
    try:
        assert sink.url.endswith("/?token=S3cr3t%2B%26x") and sink.http_url.startswith("http://")
        client = WsClient(sink.url)
        assert client.recv()["type"] == "hello"
        client.close()
        base = sink.url.split("?")[0]
        for wrong in (base, base + "?token=S3cr3t+&x", base + "?token=S3cr3t", base + "?token=%ff"):
            err = refused(wrong)
            assert err.response.status_code == 403 and b"token=SECRET" in err.response.body, wrong
        # the viewer's files are public (the token guards the websocket), and no page shows the token
        http = "http" + base[2:]
        assert raw_request("127.0.0.1", sink.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").endswith(b"<h1>viewer</h1>")
        assert TOKEN.encode() not in raw_request("127.0.0.1", sink.port, b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        assert http.startswith("http://127.0.0.1:")
    finally:
        sink.close()
    bare = WebSocketSink("127.0.0.1", 0, token=TOKEN, web_root=None).start()
    try:  # the "no viewer installed" page names the address, never the token
        reply = raw_request("127.0.0.1", bare.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"404" in reply.split(b"\r\n")[0] and b"?token=SECRET" in reply and b"S3cr3t" not in reply
    finally:
        bare.close()


def test_the_viewer_works_end_to_end_in_token_mode(tiny_engine):
    with live_session(tiny_engine, steps=2, token=TOKEN) as session, browser_page() as page:
        viewer = session.websocket.http_url
        assert viewer.endswith("/?token=S3cr3t%2B%26x")
        assert f"viewer:     {viewer}" in session.describe()
        page.goto(viewer.split("?")[0])  # without the token the page loads and says why it cannot connect
        page.wait_for_function("document.querySelector('#connection').textContent.includes('?token=')", timeout=20_000)
        assert any("403" in e for e in page.errors)  # Chromium's own note of the refusal
        page.errors.clear()
        page.goto(viewer)
        page.wait_for_function("window.viewer && window.viewer.connection === 'open'", timeout=20_000)
        page.fill("#prompt", "a red circle above a blue square")
        page.fill("#steps", "2")
        page.press("#prompt", "Enter")
        page.wait_for_function("window.viewer.counts.final >= 1", timeout=60_000)
        counts = page.evaluate("({...window.viewer.counts})")
        assert counts["steps"] == 2 and counts["maps"] >= 2
        assert not [e for e in page.errors if "favicon" not in e]


# --------------------------------------------------------------------------- client cap


def _admitted_later(url: str, timeout: float = 20.0) -> WsClient:
    """A client let in once a place is free (the server forgets a client just after it closed)."""
    admitted = []

    def try_connect() -> bool:
        try:
            admitted.append(WsClient(url))
        except InvalidStatus:
            return False
        return True

    assert wait_for(try_connect, timeout, poll=0.05), "no place came free for a new client"
    return admitted[0]


def test_clients_beyond_the_cap_are_refused_and_the_others_keep_working(tiny_engine, caplog):
    cap = 3
    with live_session(tiny_engine, steps=2, max_clients=cap) as session, ExitStack() as stack:
        url = session.websocket.url
        first = [WsClient(url) for _ in range(cap)]
        for client in first:
            stack.callback(client.close)
            assert client.recv()["type"] == "hello"
        for _ in range(5):
            err = refused(url)
            assert err.response.status_code == 503 and b"max_clients" in err.response.body
        # (with the wire in its own process its log records come up a pipe: wait for the last one)
        assert wait_for(lambda: caplog.text.count("3 clients already connected (max_clients)") == 5, 10), caplog.text
        first[0].send({"type": "prompt", "prompt": "a full house", "steps": 2})
        for client in first:
            assert client.until(is_json("run_end"))["status"] == "completed"
        first[0].close()
        late = _admitted_later(url)
        stack.callback(late.close)
        assert late.until(is_json("hello"))["type"] == "hello"
        assert len(session.websocket.clients) == cap
