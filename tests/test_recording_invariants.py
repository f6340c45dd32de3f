"""The recording's crash-safety promise (docs/RECORDING.md), checked with failures injected at
chosen points of the real writer instead of a kill at a random moment:

- a step's index line is written only after all its files are in place;
- every file at its final name is whole (written under a temporary name, then renamed);
- the reader trusts no index line whose files are missing;
- a disk that hangs never holds the generation thread for more than one short wait.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time

import numpy as np
import pytest
from PIL import Image

from bridge import mapkinds
from bridge.recording import Recorder, load_recording
from bridge.recording import writer as writer_mod
from bridge.recording.every_run import RecordEveryRun
from _disk import FaultyDisk
from _live import wait_for
from replay_recordings import synthetic_frames, synthetic_recording

FAIL_AT = 3  # the step whose writing fails


class InjectedFailure(OSError):
    pass


def record(folder, frames_kw=None, **recorder_kw):
    start, frames, end = synthetic_frames(steps=6, **(frames_kw or {}))
    rec = Recorder(folder, **recorder_kw)
    rec.on_run_start(start)
    for f in frames:
        rec.on_step(f)
    rec.on_run_end(end)
    return rec, frames


def fail_in_array_bytes(monkeypatch):
    """Step FAIL_AT's step maps get half their bytes written, then the disk fills up (simulated
    at the writer's door to the disk, tests/_disk.py)."""
    FaultyDisk(monkeypatch).fail_from(errno.ENOSPC, lambda path: f"{os.sep}maps{os.sep}{FAIL_AT:06d}.npy" in path)


def fail_in_array_bytes_and_cannot_tidy(monkeypatch):
    """As above, and the half-written file cannot be removed either (a killed process, a disk
    that turned read-only): only writing to a temporary name keeps the final names whole."""
    fail_in_array_bytes(monkeypatch)

    def cannot_remove(path):
        raise OSError(errno.EROFS, "read-only file system (injected)")

    monkeypatch.setattr(writer_mod, "_remove", cannot_remove)


def fail_at_rename(monkeypatch):
    """The rename that puts step FAIL_AT's cumulative map in place fails (maps is already there)."""
    real_replace = os.replace

    def replace(src, dst, *a, **kw):
        if str(dst).endswith(os.path.join("cumulative", f"{FAIL_AT:06d}.npy")):
            raise InjectedFailure("input/output error (injected)")
        return real_replace(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", replace)


def complete_index_steps(folder) -> list[int]:
    """The steps named by steps.jsonl's complete lines, read without the package's reader."""
    lines = (folder / "steps.jsonl").read_text().splitlines(keepends=True)
    return [json.loads(line)["step"] for line in lines if line.endswith("\n")]


@pytest.mark.parametrize("inject", [fail_in_array_bytes, fail_in_array_bytes_and_cannot_tidy, fail_at_rename],
                         ids=["array-bytes", "array-bytes-untidy", "rename"])
def test_a_write_failing_mid_step_leaves_a_consistent_prefix(tmp_path, monkeypatch, inject):
    inject(monkeypatch)
    folder = tmp_path / "run"
    rec, frames = record(folder)
    assert not rec.ok and f"step {FAIL_AT}" in rec.error and ("injected" in rec.error or "disk is full" in rec.error)

    # The index never names the step whose files did not all land: index after arrays.
    assert complete_index_steps(folder) == list(range(FAIL_AT))
    # Nothing at a final name is half written: writes go to a temporary name, then rename.
    for kind in mapkinds.kinds():
        for path in (folder / kind.folder).glob("*.npy"):
            assert np.load(path).shape == frames[0].kinds[kind.name].shape, path
    for path in (folder / "previews").glob("*.png"):
        Image.open(path).load()
    assert not (folder / "maps" / f"{FAIL_AT + 1:06d}.npy").exists()  # nothing is written after a failure

    back = load_recording(folder)
    assert back.truncated and [f.step for f in back.frames()] == list(range(FAIL_AT))
    for f, sent in zip(back.frames(), frames):
        assert f.maps.tobytes() == sent.maps.tobytes() and f.cumulative.tobytes() == sent.cumulative.tobytes()
    assert back.run_end().status == "cancelled"


@pytest.mark.parametrize("kind", ["maps", "cumulative"])
def test_the_reader_trusts_no_line_whose_files_are_missing(tmp_path, kind):
    """What a file system that lost a rename leaves: the index names a step whose file is absent."""
    folder = synthetic_recording(tmp_path / "run", steps=6)
    (folder / mapkinds.get(kind).folder / f"{FAIL_AT:06d}.npy").unlink()
    assert len(complete_index_steps(folder)) == 6
    back = load_recording(folder)
    assert len(back) == FAIL_AT and back.truncated
    assert [f.step for f in back.frames()] == list(range(FAIL_AT))


def test_a_hung_disk_costs_generation_one_short_wait_and_the_recording_stays_a_prefix(tmp_path, monkeypatch):
    entered, release = threading.Event(), threading.Event()
    real_step = writer_mod._RunWriter.step

    def hung_step(self, frame):
        if frame.step == 0:
            entered.set()
            release.wait(30)  # the disk hangs on step 0 until the test lets it go
        real_step(self, frame)

    monkeypatch.setattr(writer_mod._RunWriter, "step", hung_step)
    start, frames, end = synthetic_frames(steps=10)
    rec = Recorder(tmp_path / "run", queue_steps=2, block_s=0.05)
    rec.on_run_start(start)
    rec.on_step(frames[0])
    assert entered.wait(10)
    t0 = time.perf_counter()
    for f in frames[1:]:  # steps 1 and 2 fill the queue; step 3 waits block_s, then it and the rest drop
        rec.on_step(f)
    held = time.perf_counter() - t0
    assert held < 1.0, f"the generation thread was held {held:.2f} s"
    assert rec.dropped == 7 and not rec.ok and "dropped step 3" in rec.error
    release.set()
    rec.on_run_end(end)  # flushes: returns once the writer is done
    assert not rec.writing
    back = load_recording(tmp_path / "run")
    assert [f.step for f in back.frames()] == [0, 1, 2] and back.status == "completed" and back.truncated
    assert back.run_end().status == "cancelled"


def test_a_live_session_on_a_hung_disk_keeps_generating_and_records_again_once_it_recovers(tmp_path, monkeypatch):
    entered, release = threading.Event(), threading.Event()
    real_step = writer_mod._RunWriter.step

    def hung_step(self, frame):
        if frame.run_id == "run-1" and frame.step == 0:
            entered.set()
            release.wait(30)
        real_step(self, frame)

    monkeypatch.setattr(writer_mod._RunWriter, "step", hung_step)
    monkeypatch.setattr(writer_mod, "QUEUE_STEPS", 2)
    monkeypatch.setattr(writer_mod, "BLOCK_S", 0.05)
    sink = RecordEveryRun(tmp_path / "runs")
    runs = [synthetic_frames(steps=8, run_id=f"run-{k}") for k in (1, 2, 3)]

    def play(run):
        start, frames, end = run
        sink.on_run_start(start)
        for f in frames:
            sink.on_step(f)
            if f.run_id == "run-1" and f.step == 0:
                assert entered.wait(10)
        sink.on_run_end(end)

    t0 = time.perf_counter()
    play(runs[0])  # hangs on disk: dropped from step 3, its end cannot be queued
    play(runs[1])  # the disk is still stuck: not recorded at all
    held = time.perf_counter() - t0
    assert held < 2.0, f"generation was held {held:.2f} s"
    assert not sink.ok and "run-2 was not recorded" in sink.error
    release.set()
    assert wait_for(lambda: not sink.recorders[0].writing, 10)
    play(runs[2])  # recovered: recorded whole
    sink.close()
    assert [f.step for f in load_recording(tmp_path / "runs" / "run-1").frames()] == [0, 1, 2]
    assert not (tmp_path / "runs" / "run-2").exists()
    assert len(load_recording(tmp_path / "runs" / "run-3")) == 8 and not load_recording(tmp_path / "runs" / "run-3").truncated
