"""Retention where it runs: a live session that records every run keeps only the newest runs,
never deletes the run being written, and a show replaying from the same folder keeps the run
it is playing.  Real recordings of the tiny model and of the real writer; the only stand-in is
a disk that is slow on cue (the writer's ``_open``), to hold a run mid-write."""

from __future__ import annotations

import argparse
import logging
import threading

from bridge.bus import Bus
from bridge.session_wiring import sink_config
from bridge.presets import add_preset_arguments, apply_overrides, load_preset
from bridge.recording import load_recording
from bridge.recording import writer as writer_mod
from bridge.recording.every_run import RecordEveryRun
from bridge.recording.retention import Retention, prune, recorded_runs
from bridge.replay import Player
from _live import live_session, wait_for
from replay_recordings import synthetic_frames, synthetic_recording


def names(root):
    return [folder.name for folder, _, _ in recorded_runs(root)]


def test_an_installation_recording_every_run_keeps_the_newest(tiny_engine, tmp_path, caplog):
    root = tmp_path / "runs"
    root.mkdir()
    (root / "notes").mkdir()  # not a recording: never touched
    caplog.set_level(logging.INFO, logger="bridge")
    with live_session(tiny_engine, mode="installation", playlist=["a red apple", "a blue bird"], steps=2, pause=0.0,
                      loops=3, record=str(root), keep_runs=2) as session:
        assert session.runner.wait_for(lambda r: r.playlist.finished and r.state == "idle", 240)
    ends = session.runner.runs
    assert len(ends) == 6 and all(e.status == "completed" for e in ends)
    assert names(root) == [e.run_id for e in ends[-2:]]
    assert all(len(load_recording(root / e.run_id)) == 2 for e in ends[-2:])
    assert (root / "notes").is_dir()
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("retention: deleted")]
    assert said and all("2 run(s)" in line for line in said)


def test_the_run_being_written_is_never_pruned(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    entered, release = threading.Event(), threading.Event()
    real_open = writer_mod._open

    def slow_disk(path, mode, **kw):  # the disk stalls on run "writing"'s step 2 until released
        if "writing/maps/000002.npy" in str(path):
            entered.set()
            assert release.wait(30)
        return real_open(path, mode, **kw)

    monkeypatch.setattr(writer_mod, "_open", slow_disk)
    sink = RecordEveryRun(root, Retention(keep_runs=1))

    def play(run_id):
        start, frames, end = synthetic_frames(steps=5, run_id=run_id)
        sink.on_run_start(start)
        for f in frames:
            sink.on_step(f)
        sink.on_run_end(end)

    play("old")
    assert wait_for(lambda: not any(r.writing for r in sink.recorders))
    play("writing")  # its end is queued; the writer is stuck at step 2
    assert entered.wait(30)
    play("newest")  # finishes and prunes to one run: "old" goes, "writing" is protected
    assert wait_for(lambda: not (root / "old").exists())
    assert (root / "writing" / "manifest.json").is_file() and (root / "newest" / "manifest.json").is_file()
    release.set()
    sink.close()  # "writing" finishes, and its own prune keeps it, the newest recording
    assert names(root) == ["writing"]
    rec = load_recording(root / "writing")
    assert len(rec) == 5 and not rec.truncated


def test_a_prune_that_does_not_know_of_a_run_still_cannot_take_it_while_it_is_written(tmp_path, monkeypatch):
    """The race a live session had: a prune on the last run's thread listed a run that had just
    started (its manifest already on disk) without it in ``protect``, and deleted its files under
    the writer.  The writer's own hold, taken before its manifest exists, keeps it."""
    from bridge.recording.writer import Recorder

    root = tmp_path / "runs"
    synthetic_recording(root / "old", steps=2)
    entered, release = threading.Event(), threading.Event()
    real_open = writer_mod._open

    def slow_disk(path, mode, **kw):
        if "writing/maps/000001.npy" in str(path):
            entered.set()
            assert release.wait(30)
        return real_open(path, mode, **kw)

    monkeypatch.setattr(writer_mod, "_open", slow_disk)
    start, frames, end = synthetic_frames(steps=3, run_id="writing")
    rec = Recorder(root / "writing", wait_at_end=False)
    rec.on_run_start(start)
    for f in frames:
        rec.on_step(f)
    rec.on_run_end(end)
    assert entered.wait(30)
    # keep one run, protect nothing: the unfinished run is the newest, but even listed first it stays
    assert [f.name for f in prune(root, Retention(keep_runs=1), protect=[])] == ["old"]
    assert [f.name for f in prune(root, Retention(keep_runs=0, max_bytes=1), protect=[])] == []
    release.set()
    assert rec.wait(30) and rec.ok
    assert len(load_recording(root / "writing")) == 3


class Started:
    def __init__(self):
        self.started = threading.Event()

    def on_run_start(self, start):
        self.started.set()


def test_a_run_being_replayed_is_not_pruned_until_it_ends(tmp_path):
    root = tmp_path / "runs"
    for name in ("r0", "r1", "r2"):
        synthetic_recording(root / name, steps=4)
    assert names(root) == ["r0", "r1", "r2"]
    started = Started()
    player = Player([load_recording(root / "r0")], Bus([started]), speed="max", paused=True)
    played = []
    thread = threading.Thread(target=lambda: played.append(player.play()), daemon=True)
    thread.start()
    try:
        assert started.started.wait(30)  # the oldest run is on, held
        assert [f.name for f in prune(root, Retention(keep_runs=2))] == ["r1"]  # not the oldest, r0
        assert names(root) == ["r0", "r2"]
    finally:
        player.resume()
        thread.join(30)
    assert played == [1]
    assert [f.name for f in prune(root, Retention(keep_runs=1))] == ["r0"]  # released at its end


def test_retention_comes_from_the_preset_and_the_command_line():
    installation = load_preset("installation").values
    assert (installation["keep_runs"], installation["max_gb"]) == (500, 20.0)
    assert (load_preset("live").values["keep_runs"], load_preset("live").values["max_gb"]) == (0, 0.0)
    parser = argparse.ArgumentParser()
    add_preset_arguments(parser)
    values = apply_overrides(installation, parser.parse_args(["--keep-runs", "7", "--max-gb", "1.5"]))
    config = sink_config(values, progress=False)
    assert (config.keep_runs, config.max_gb) == (7, 1.5)
