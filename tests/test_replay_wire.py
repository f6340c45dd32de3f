"""Replay puts the same bytes on the wire as the live run it recorded, and needs no torch.

A real live session (tiny built-in model) records a run while a websocket client and a UDP
listener capture everything it sends; then `run_bridge.py replay` runs in a fresh Python
process and the same capture is made.  Binary frames and run/step JSON must be identical byte
for byte, and so must every OSC datagram; `hello`/`status` messages describe the server (live
or replay, its state, its clients) and are left out of the comparison.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from _live import OscCollector, RawClient, live_session
from replay_recordings import REPO

@pytest.fixture(scope="module")
def live_capture(tiny_engine, tmp_path_factory):
    """One live run: the recording it left and what a websocket client and OSC target received."""
    root = tmp_path_factory.mktemp("wire")
    osc = OscCollector()
    try:
        with live_session(tiny_engine, osc_out=[osc.target], record=str(root / "runs"), steps=6) as session:
            client = RawClient(session.websocket.url)
            assert client.greeted()
            # a self-attention region and concepts too, so their frames (types 5 and 7) and the
            # step's "regions" and "concepts" replay as well
            client.send({"type": "regions", "regions": [{"id": "apple", "box": [16, 16, 48, 48]}]})
            client.send({"type": "concepts", "concepts": ["apple", "background"]})
            client.send({"type": "prompt", "prompt": "a red apple on a wooden table", "seed": 7})
            assert client.ended.wait(120), "the live run did not end"
            assert osc.wait_for(lambda msgs: any(a == "/daam/run/status" for a, _ in msgs), 10)
            client.close()
        runs = list((root / "runs").iterdir())
        assert len(runs) == 1
        return runs[0], client.run_messages(), list(osc.datagrams)
    finally:
        osc.close()


@pytest.mark.parametrize("wire", [[], ["--wire-process"]], ids=["wire-in-process", "wire-process"])
def test_replay_is_byte_identical_to_live_and_imports_no_torch(live_capture, wire):
    recording, live_ws, live_osc = live_capture
    osc = OscCollector()
    code = ("import sys\nfrom bridge.cli import main\n"
            "rc = main(sys.argv[1:])\n"
            "print('HEAVY', sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules), flush=True)\n"
            "sys.exit(rc)\n")
    args = ["replay", str(recording), "--paused", "--port", "0", "--osc-in-port", "0", "--osc-out", osc.target,
            "--no-progress", "--web-root", "web", *wire]
    proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        url = None
        for line in proc.stdout:
            m = re.match(r"websocket:\s+(ws://\S+)", line)
            if m:
                url = m.group(1)
                break
        assert url, proc.stderr.read()
        client = RawClient(url)
        assert client.greeted()
        client.send({"type": "resume"})
        assert client.ended.wait(60), "the replay did not end"
        out, err = proc.communicate(timeout=30)
        client.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        osc.close()
    assert proc.returncode == 0, err
    assert "HEAVY []" in out, out  # no torch, diffusers or transformers in the replaying process

    replay_ws = client.run_messages()
    assert len(replay_ws) == len(live_ws) > 6 * 4  # run_start, 6 × (maps, cumulative, self, concepts, preview, step), final, run_end
    for i, (a, b) in enumerate(zip(live_ws, replay_ws)):
        assert type(a) is type(b) and a == b, f"message {i} differs"
    assert any(isinstance(m, bytes) for m in replay_ws)
    assert sum(isinstance(m, bytes) and m[5] == 5 for m in replay_ws) == 6  # one self-attention frame per step
    assert sum(isinstance(m, bytes) and m[5] == 7 for m in replay_ws) == 6  # one concepts frame per step
    assert all('"regions":[{"id":"apple","box":[16.0,16.0,48.0,48.0]}]' in m and '"concepts":["apple","background"]' in m
               for m in replay_ws if isinstance(m, str) and '"type":"step"' in m)
    # OSC: every bundle both sides sent is byte-identical.  An OSC sink skips a stale step when the
    # machine is too busy to send it before the next one (newest step wins, live and replay
    # alike), so the comparison is per step, with most steps required on both sides.
    live, replayed = _osc_by_step(live_osc), _osc_by_step(osc.datagrams)
    assert {("/daam/run/start",), ("/daam/run/end",)} <= live.keys() & replayed.keys()
    assert len([k for k in live.keys() & replayed.keys() if k[0] == "step"]) >= 3
    for key in live.keys() & replayed.keys():
        assert live[key] == replayed[key], f"OSC bundle {key} differs"


def _osc_by_step(datagrams: list[bytes]) -> dict:
    """Each bundle keyed by its step (("step", n)) or, for run start and end, its first address."""
    from pythonosc.osc_packet import OscPacket

    out = {}
    for data in datagrams:
        messages = [m.message for m in OscPacket(data).messages]
        step = next((m.params[0] for m in messages if m.address == "/daam/step"), None)
        out[("step", step) if step is not None else (messages[0].address,)] = data
    return out
