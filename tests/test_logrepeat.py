"""Repeated log lines collapse into a count: the filter alone, then a real flood of asyncio
"out of system resource" accept errors from a bridge short of file descriptors."""

from __future__ import annotations

import io
import logging
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from bridge.logrepeat import RepeatFilter
from tests._live import WsClient

ROOT = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _logger(repeat: RepeatFilter) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(repeat)
    log = logging.getLogger(f"test.logrepeat.{id(repeat)}")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    return log, out


def test_a_burst_of_one_message_is_one_line_then_a_count():
    clock = Clock()
    log, out = _logger(RepeatFilter(interval=10.0, clock=clock))
    for _ in range(1235):
        log.error("socket.accept() out of system resource")
    log.warning("refused a websocket client from %s: %s", "127.0.0.1", "full")  # another message: not held up
    log.error("socket.accept() out of system resource")
    assert out.getvalue().splitlines() == ["ERROR socket.accept() out of system resource",
                                           "WARNING refused a websocket client from 127.0.0.1: full"]
    clock.now += 10.0
    log.error("socket.accept() out of system resource")
    log.error("socket.accept() out of system resource")
    assert out.getvalue().splitlines()[2:] == ["ERROR socket.accept() out of system resource (repeated 1235 times in the last 10 s)"]
    clock.now += 30.0
    log.error("socket.accept() out of system resource")  # one dropped since: counted
    assert out.getvalue().splitlines()[3] == "ERROR socket.accept() out of system resource (repeated 1 times in the last 30 s)"


def test_messages_differing_in_text_or_level_are_all_kept():
    log, out = _logger(RepeatFilter(interval=10.0, clock=Clock()))
    for i in range(3):
        log.info("client 127.0.0.1:%d connected", 5000 + i)
    log.info("same")
    log.warning("same")
    assert len(out.getvalue().splitlines()) == 5


def test_it_remembers_a_bounded_number_of_messages():
    repeat = RepeatFilter(interval=10.0, clock=Clock(), max_keys=8)
    log, out = _logger(repeat)
    for i in range(1000):
        log.info("distinct %d", i)
    assert len(repeat._seen) == 8 and len(out.getvalue().splitlines()) == 1000


CHILD = """
import resource, sys
from bridge.cli import configure_logging
from bridge.sinks.websocket import WebSocketSink
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
configure_logging(repeat_interval=1.0)
sink = WebSocketSink("127.0.0.1", 0, web_root=None).start()
print(sink.url, flush=True)
sys.stdin.read()
sink.close()
"""


def test_running_out_of_file_descriptors_logs_a_few_lines_not_a_flood():
    child = subprocess.Popen([sys.executable, "-c", CHILD], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    repeated = threading.Event()

    def pump():
        for line in child.stderr:
            lines.append(line.rstrip())
            if "out of system resource (repeated" in line:
                repeated.set()

    threading.Thread(target=pump, daemon=True).start()
    held: list[socket.socket] = []
    try:
        url = child.stdout.readline().strip()
        assert url.startswith("ws://"), "\n".join(lines)
        port = int(url.rsplit(":", 1)[1].strip("/"))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        for _ in range(min(150, soft // 2)):  # more connections than the child has descriptors
            held.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        assert repeated.wait(60), "\n".join(lines[-20:])
        for s in held:
            s.close()
        held.clear()
        deadline = time.monotonic() + 60  # the bridge recovers once descriptors are free
        while True:
            try:
                client = WsClient(url, open_timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline, "\n".join(lines[-20:])
        assert client.recv()["type"] == "hello"
        client.close()
    finally:
        for s in held:
            s.close()
        child.stdin.close()
        child.wait(30)
    heads = [line for line in lines if "out of system resource" in line]
    assert heads and len(heads) <= 20, len(heads)
    assert any("repeated" in line for line in heads)
