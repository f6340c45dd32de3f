"""Sink plumbing: the mailbox (latest step wins), build_sinks, and the Spout sink.

Spout exists only on Windows, so its test replaces the SpoutGL library — the true edge —
with a recording stand-in (named ``FakeSpoutGL``) and checks what the sink hands to it.
"""

from __future__ import annotations

import logging
import sys
import threading

import numpy as np
import pytest

from bridge.frames import RunEnd, RunStart, StepFrame
from bridge.phases import PhaseSchedule
from bridge.sinks import SinkConfig, build_sinks
from bridge.sinks.mailbox import Mailbox, ThreadedSink
from bridge.sinks.selection import Selection
from bridge.sinks.spout import GL_RGBA, SpoutSink, load_spout, make_spout_sink
from tests._live import OscCollector


def _start(words=("a", "red", "apple")):
    return RunStart("r1", " ".join(words), "", 0, 3, 7.5, 16, 8, (4, 8), tuple(words), ((1,), (2,), (3,)), (),
                    "test", "DDIM", PhaseSchedule())


def _step(i, words=("a", "red", "apple")):
    maps = np.zeros((len(words), 4, 8), np.float16)
    maps[:, 1, 2] = np.arange(1, len(words) + 1)
    preview = np.full((8, 16, 3), i, np.uint8)
    return StepFrame("r1", i, 3, 1.0, "noise", (1.0, 0.0, 0.0), tuple(words), maps, maps, (0.2, 0.3, 0.5), preview, 0.1 * i)


def test_mailbox_keeps_run_boundaries_and_only_the_newest_step():
    box = Mailbox()
    start, steps, end = _start(), [_step(i) for i in range(3)], RunEnd("r1", "completed", 3, 1.0)
    box.put(start)
    for s in steps:
        box.put(s)
    box.put(end)
    got = [box.get(0)[0] for _ in range(3)]
    assert got[0] is start and got[1] is steps[2] and got[2] is end
    assert box.dropped == 2 and box.get(0) is None


def test_threaded_sink_survives_its_own_errors():
    class Flaky(ThreadedSink):
        name = "flaky"

        def __init__(self):
            self.seen = []
            super().__init__()

        def handle(self, event):
            if isinstance(event, StepFrame) and event.step == 0:
                raise RuntimeError("boom")
            self.seen.append(type(event).__name__)

    sink = Flaky()
    sink.on_run_start(_start())
    sink.on_step(_step(0))
    assert sink.flush(5)
    sink.on_step(_step(1))
    sink.on_run_end(RunEnd("r1", "completed", 2, 1.0))
    assert sink.flush(5)
    sink.close()
    assert sink.seen == ["RunStart", "StepFrame", "RunEnd"]


class FakeSpoutGL:
    """Stand-in for the SpoutGL module (Windows only): records every sender call."""

    calls: list = []

    class SpoutSender:
        def setSenderName(self, name):
            FakeSpoutGL.calls.append(("name", name))

        def sendImage(self, buffer, width, height, gl_format, invert, host_fbo):
            FakeSpoutGL.calls.append(("image", width, height, gl_format, invert, np.array(buffer)))
            return True

        def setFrameSync(self, name):
            FakeSpoutGL.calls.append(("sync", name))

        def releaseSender(self):
            FakeSpoutGL.calls.append(("release",))


def test_spout_sink_sends_the_selected_word_and_the_preview():
    FakeSpoutGL.calls = []
    selection = Selection()
    sink = SpoutSink(FakeSpoutGL, "daam", selection)
    sink.on_run_start(_start())
    assert sink.flush(5)
    selection.select("apple")
    sink.on_step(_step(1))
    assert sink.flush(5)
    sink.close()
    names = [c[1] for c in FakeSpoutGL.calls if c[0] == "name"]
    assert names == ["daam-word", "daam-preview"]
    word, preview = [c for c in FakeSpoutGL.calls if c[0] == "image"]
    assert word[1:5] == (8, 4, GL_RGBA, False) and word[5].shape == (4, 8, 4)
    assert word[5][1, 2].tolist() == [255, 255, 255, 255] and word[5][0, 0].tolist() == [0, 0, 0, 255]
    assert preview[1:3] == (16, 8) and (preview[5][..., :3] == 1).all() and (preview[5][..., 3] == 255).all()
    assert ("sync", "daam-word") in FakeSpoutGL.calls and FakeSpoutGL.calls[-1] == ("release",)


@pytest.mark.skipif(sys.platform == "win32", reason="checks the message on systems without Spout")
def test_spout_is_reported_unavailable_in_one_line(caplog):
    with caplog.at_level(logging.INFO, logger="bridge.sinks.spout"):
        assert load_spout() is None and make_spout_sink() is None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all("Spout output is unavailable" in line and "Windows" in line for line in lines)


def test_build_sinks_makes_what_the_config_asks_for(tmp_path):
    out = OscCollector()
    try:
        sinks = build_sinks(SinkConfig(port=0, web_root=None, osc_out=[out.target], spout=True, progress=False,
                                       record=str(tmp_path)))
        try:
            kinds = [type(s).__name__ for s in sinks.all]
            assert kinds == ["OscSink", "RecordEveryRun", "WebSocketSink"]  # no Spout off Windows
            assert sinks.websocket.port > 0 and sinks.osc.targets == [("127.0.0.1", out.port)]
            assert sinks.websocket.selection is sinks.selection is sinks.osc.selection
        finally:
            sinks.close()
        none = build_sinks(SinkConfig(port=None, osc_out=[], progress=False))
        assert none.all == [] and none.websocket is None
    finally:
        out.close()


def test_build_sinks_closes_what_it_made_when_a_later_sink_fails():
    import socket

    from bridge.errors import UserError

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    before = threading.active_count()
    try:
        with pytest.raises(UserError, match="choose another --port"):
            build_sinks(SinkConfig(port=busy.getsockname()[1], osc_out=["127.0.0.1:9"], progress=False))
    finally:
        busy.close()
    assert threading.active_count() <= before + 1  # the OSC worker was stopped again
