"""A disk that fills up or turns read-only while every run is recorded (docs/RECORDING.md).

The edge simulated is the disk itself: the recorder's writes fail with ENOSPC or EROFS from a
chosen write on (tests/_disk.py), everything else is real — real files, the real writer
thread, a real live session with the tiny model and a real websocket client.

Promised: one log line per run and no traceback; the failed run keeps a readable prefix (its
manifest is written first); later runs are not recorded while the disk fails and are recorded
again, without a restart, once it works; no ``.tmp`` file and no folder without a manifest
is left; the live stream never notices.
"""

from __future__ import annotations

import errno
import io
import logging

import pytest

from bridge.recording import Recorder, load_recording
from bridge.recording import writer as writer_mod
from bridge.recording.every_run import RecordEveryRun
from bridge.recording.retention import HOLD_FILE
from _disk import FaultyDisk
from _live import WsClient, is_json, live_session, wait_for
from replay_recordings import synthetic_frames

STEPS = 6


def play(sink, run_id):
    start, frames, end = synthetic_frames(steps=STEPS, run_id=run_id)
    sink.on_run_start(start)
    for f in frames:
        sink.on_step(f)
    sink.on_run_end(end)
    assert wait_for(lambda: not any(r.writing for r in sink.recorders)), "the writer did not finish"


def leftovers(root):
    """Temporary files, and folders that are no recording."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.tmp")) + sorted(
        p.name for p in root.iterdir() if p.is_dir() and not (p / "manifest.json").is_file())


def nth_touch(name: str, n: int):
    """A fault trigger: the n-th touch (1-based: open, write, flush) of a path containing ``name``."""
    seen = []

    def when(path):
        if name in path:
            seen.append(path)
        return len(seen) >= n

    return when


STRIKES = {  # where in run-1 the disk fails (the n-th touch of a path), and the steps run-1 keeps
    "manifest": (("run-1/manifest.json", 1), None),
    "step-array": (("run-1/maps/000003.npy", 1), 3),
    "preview": (("run-1/previews/000003.png", 1), 3),
    "index-line": (("run-1/steps.jsonl", 5), 3),  # opened at the start, then one write per step
    "run-end": (("run-1/final.png", 1), STEPS),
}


CASES = [(code, strike) for code in (errno.ENOSPC, errno.EROFS) for strike in STRIKES]


@pytest.mark.parametrize("code, strike", CASES, ids=[f"{'full' if c == errno.ENOSPC else 'read-only'}-{s}" for c, s in CASES])
def test_recording_suspends_on_a_failing_disk_and_resumes_by_itself(tmp_path, monkeypatch, caplog, code, strike):
    disk = FaultyDisk(monkeypatch)
    (name, n), kept = STRIKES[strike]
    when = nth_touch(name, n)
    root = tmp_path / "runs"
    sink = RecordEveryRun(root)
    caplog.set_level(logging.INFO, logger="bridge")

    disk.fail_from(code, when)
    play(sink, "run-1")
    assert disk.struck.is_set()
    status = sink.status()
    assert status["state"] == "suspended" and ("full" if code == errno.ENOSPC else "read-only") in status["error"]
    play(sink, "run-2")  # the disk still fails: not recorded
    if code == errno.ENOSPC:  # a full disk still deletes: nothing half is left even before recovery
        assert leftovers(root) == []
    disk.heal()
    play(sink, "run-3")
    play(sink, "run-4")
    sink.close()

    assert sink.status()["state"] == "recording"
    if kept is None:
        assert not (root / "run-1").exists()
    else:
        rec = load_recording(root / "run-1")
        assert [f.step for f in rec.frames()] == list(range(kept)) and rec.truncated
        assert rec.run_end().status == "cancelled"
        assert (root / "run-1" / "steps.jsonl").read_bytes().endswith(b"\n")  # no half line at its end
    assert not (root / "run-2").exists()
    for run in ("run-3", "run-4"):
        rec = load_recording(root / run)
        assert len(rec) == STEPS and rec.status == "completed" and not rec.truncated
    assert leftovers(root) == []  # what a read-only disk kept is tidied once writes work

    lines = [r for r in caplog.records if r.name.startswith("bridge.recording")]
    assert all(r.exc_info is None for r in lines), "a traceback was logged"
    said = [r.getMessage() for r in lines]
    assert len(said) == 3, said  # one line per run that was not (wholly) recorded, one on recovery
    assert said[0].startswith("recording suspended: run run-1: writing ") and "resumes by itself" in said[0]
    assert said[1].startswith("run run-2 not recorded: recording is suspended (the disk is ")
    assert said[2].startswith("recording resumed:") and "1 run(s) were not recorded" in said[2]
    assert not sink.ok and sink.failed == 2


class _CountedFile(io.BufferedWriter):
    """A real buffered file (numpy treats it as one) that counts what passes its write()."""

    def __init__(self, raw, counts, path):
        super().__init__(raw)
        self._counts, self._path = counts, path

    def write(self, data):
        n = super().write(data)
        self._counts[self._path] = self._counts.get(self._path, 0) + n
        return n


def test_every_byte_goes_through_write_where_a_full_disk_keeps_its_errno(tmp_path, monkeypatch):
    """Found on a real full disk: np.save writes a real file through its descriptor and reports
    ENOSPC as "28672 requested and 18368 written", with no errno, so the recorder could not say
    the disk was full.  The writer must hand every byte to the file's write()."""
    counts: dict = {}
    real_open = writer_mod._open

    def counting_open(path, mode, **kw):
        f = real_open(path, mode, **kw)
        counts[str(path)] = 0  # the last write of a file counts (the manifest is written twice)
        return _CountedFile(f.detach(), counts, str(path)) if isinstance(f, io.BufferedWriter) else f

    monkeypatch.setattr(writer_mod, "_open", counting_open)
    start, frames, end = synthetic_frames(steps=3)
    rec = Recorder(tmp_path / "run")
    rec.on_run_start(start)
    for f in frames:
        rec.on_step(f)
    rec.on_run_end(end)
    assert rec.ok
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file() and p.name not in ("steps.jsonl", HOLD_FILE)]
    assert len(files) == 1 + 3 * 3 + 2  # manifest, per step two maps and a preview, final.png, daam.npy
    for p in files:
        assert counts.get(str(p) + ".tmp") == p.stat().st_size, p.name


def test_a_single_recording_on_a_full_disk_says_why_and_leaves_nothing_half(tmp_path, monkeypatch, caplog):
    """`render`'s recorder: the run's only line, the error it exits with, no .tmp."""
    disk = FaultyDisk(monkeypatch)
    disk.fail_from(errno.ENOSPC, nth_touch("cumulative/000002.npy", 1))
    start, frames, end = synthetic_frames(steps=STEPS)
    rec = Recorder(tmp_path / "out")
    rec.on_run_start(start)
    for f in frames:
        rec.on_step(f)
    rec.on_run_end(end)
    assert not rec.ok and rec.error.startswith("writing step 2 failed: the disk is full ([Errno 28]")
    assert [r.exc_info for r in caplog.records] == [None]
    assert len(load_recording(tmp_path / "out")) == 2 and leftovers(tmp_path) == []


def test_a_live_session_streams_every_step_while_the_disk_is_full(tiny_engine, tmp_path, monkeypatch, caplog):
    steps = 4
    disk = FaultyDisk(monkeypatch)
    root = tmp_path / "runs"
    caplog.set_level(logging.INFO, logger="bridge")
    with live_session(tiny_engine, steps=steps, record=str(root)) as session:
        recorder = session.sinks.recorder
        client = WsClient(session.websocket.url)

        def run(prompt):
            client.send({"type": "prompt", "prompt": prompt})
            start = client.until(is_json("run_start", prompt=prompt))
            end = client.until(is_json("run_end", run_id=start["run_id"]))
            assert end["status"] == "completed" and end["steps_done"] == steps
            assert wait_for(lambda: not any(r.writing for r in recorder.recorders))
            now = recorder.status()  # settled: the run's writer is done
            client.send({"type": "status"})  # an operator sees it (status broadcast before it are stale)
            client.until(lambda m: is_json("status")(m) and m.get("recording") == now)
            return start["run_id"], now

        disk.fail_from(errno.ENOSPC, nth_touch("maps/000001.npy", 1))
        first, status = run("a red apple")
        assert status["state"] == "suspended" and "the disk is full" in status["error"]
        second, status = run("a blue bird")
        assert status["state"] == "suspended"
        disk.heal()
        third, status = run("a green tree")
        assert status == {"state": "recording", "folder": str(root), "error": "", "failed": 2}
        client.close()
    for run_id in (first, second, third):  # the stream went on: every run's steps reached the client
        # (a slow client may skip stale steps, never the newest one)
        assert steps - 1 in [m["step"] for m in client.json("step") if m["run_id"] == run_id]
    assert len(load_recording(root / first)) == 1
    assert not (root / second).exists()
    assert len(load_recording(root / third)) == steps and leftovers(root) == []
    assert all(r.exc_info is None for r in caplog.records)
