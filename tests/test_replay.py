"""The replay player: same records in the same order, original timing, controls, playlists,
truncated and corrupt recordings."""

from __future__ import annotations

import threading
import time

import pytest

from bridge.bus import Bus
from bridge.cli import main
from bridge.frames import RunEnd, RunStart, StepFrame
from bridge.recording import load_recording
from bridge.replay import Player, ReplayError, find_recordings, open_playlist, parse_speed
from replay_recordings import killed_recording, synthetic_frames, synthetic_recording


class Timed:
    """A sink that notes each event with the monotonic time it arrived."""

    def __init__(self):
        self.events: list = []
        self.times: list[float] = []
        self.cond = threading.Condition()

    def _add(self, e):
        with self.cond:
            self.events.append(e)
            self.times.append(time.monotonic())
            self.cond.notify_all()

    on_run_start = on_step = on_run_end = _add

    def wait_for(self, predicate, timeout=10.0):
        with self.cond:
            assert self.cond.wait_for(lambda: predicate(self.events), timeout), self.events

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]


def play_in_thread(player):
    t = threading.Thread(target=player.play, daemon=True)
    t.start()
    return t


def test_replay_publishes_the_recorded_records_bit_for_bit(tmp_path):
    start, frames, end = synthetic_frames(steps=5, step_seconds=0.001)
    folder = synthetic_recording(tmp_path / "run", steps=5, step_seconds=0.001)
    sink = Timed()
    Player(open_playlist([folder]), Bus([sink]), speed=1.0).play()
    assert [type(e) for e in sink.events] == [RunStart] + [StepFrame] * 5 + [RunEnd]
    assert sink.events[0] == start
    for got, want in zip(sink.of(StepFrame), frames):
        for field in ("run_id", "step", "total", "timestep", "phase", "phase_weights", "words", "mass", "elapsed", "timings"):
            assert getattr(got, field) == getattr(want, field), field
        for field in ("maps", "cumulative", "preview"):
            a, b = getattr(got, field), getattr(want, field)
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), field
    got_end = sink.events[-1]
    assert (got_end.status, got_end.steps_done, got_end.elapsed) == ("completed", 5, end.elapsed)
    assert got_end.image.tobytes() == end.image.tobytes()


def test_steps_keep_their_original_timing_scaled_by_speed(tmp_path):
    folder = synthetic_recording(tmp_path / "run", steps=6, step_seconds=0.2)  # steps at 0.2 … 1.2 s, end 1.205 s
    took = {}
    for speed in (1.0, 4.0):
        sink = Timed()
        t0 = time.monotonic()
        Player(open_playlist([folder]), Bus([sink]), speed=speed).play()
        offsets = [t - t0 for t in sink.times]
        for frame, at in zip(sink.of(StepFrame), offsets[1:]):
            assert at >= frame.elapsed / speed  # never early
        took[speed] = offsets[-1]
    # and speed scales the timing: a slow machine adds the same slack to both, so only a
    # generous bound on the ratio (4 when there is no slack at all)
    assert took[1.0] / took[4.0] > 2


def test_pause_holds_and_resume_continues_where_it_was(tmp_path):
    folder = synthetic_recording(tmp_path / "run", steps=6, step_seconds=0.05)
    sink = Timed()
    player = Player(open_playlist([folder]), Bus([sink]))
    t = play_in_thread(player)
    sink.wait_for(lambda ev: len([e for e in ev if isinstance(e, StepFrame)]) >= 2)
    player.pause()
    held = len(sink.events)
    assert player.status().state == "paused"
    time.sleep(0.4)  # far longer than the remaining 4 steps would take
    assert len(sink.events) <= held + 1  # at most the step already being published
    paused_at = time.monotonic()
    player.resume()
    t.join(5)
    assert [e.step for e in sink.of(StepFrame)] == list(range(6))
    assert sink.times[-1] - paused_at >= 0.1  # the remaining steps kept their spacing after resume


def test_next_ends_the_run_as_cancelled_and_plays_the_next(tmp_path):
    synthetic_recording(tmp_path / "a", steps=20, step_seconds=0.05, run_id="run-a")
    synthetic_recording(tmp_path / "b", steps=3, step_seconds=0.001, run_id="run-b")
    sink = Timed()
    player = Player(open_playlist(find_recordings(tmp_path)), Bus([sink]), gap=0)
    t = play_in_thread(player)
    sink.wait_for(lambda ev: len(ev) >= 3)
    player.next()
    t.join(5)
    ends = sink.of(RunEnd)
    assert [(e.run_id, e.status) for e in ends] == [("run-a", "cancelled"), ("run-b", "completed")]
    assert ends[0].steps_done == len([f for f in sink.of(StepFrame) if f.run_id == "run-a"]) < 20
    assert [s.run_id for s in sink.of(RunStart)] == ["run-a", "run-b"]


def test_speed_change_mid_run_takes_effect(tmp_path):
    folder = synthetic_recording(tmp_path / "run", steps=10, step_seconds=0.2)  # 2 s at speed 1
    sink = Timed()
    player = Player(open_playlist([folder]), Bus([sink]))
    t = play_in_thread(player)
    sink.wait_for(lambda ev: len(ev) >= 2)
    changed = time.monotonic()
    player.set_speed(20)
    t.join(5)
    # the ~1.8 s of recording left play at 20× (0.09 s); a generous bound on the measured
    # speed-up that no loaded machine misses: at least 2×
    assert len(sink.of(StepFrame)) == 10
    left = sink.of(RunEnd)[0].elapsed - sink.of(StepFrame)[0].elapsed
    assert (sink.times[-1] - changed) < left / 2
    with pytest.raises(ReplayError, match="speed must be > 0"):
        player.set_speed(0)


def test_loop_and_shuffle_play_every_entry_each_pass(tmp_path):
    for name in "abc":
        synthetic_recording(tmp_path / name, steps=2, step_seconds=0.001, run_id=f"run-{name}")
    sink = Timed()
    player = Player(open_playlist(find_recordings(tmp_path)), Bus([sink]), loop=True, shuffle=True, gap=0, seed=3)
    t = play_in_thread(player)
    sink.wait_for(lambda ev: len([e for e in ev if isinstance(e, RunEnd)]) >= 6)
    player.stop()
    t.join(5)
    order = [s.run_id for s in sink.of(RunStart)]
    assert sorted(order[:3]) == sorted(order[3:6]) == ["run-a", "run-b", "run-c"]
    assert player.status().state == "idle" and player.status().loops >= 1


def test_playlist_is_sorted_by_name_without_shuffle(tmp_path):
    for name in ("02-b", "01-a", "03-c"):
        synthetic_recording(tmp_path / name, steps=1, step_seconds=0.001, run_id=name)
    (tmp_path / "notes").mkdir()  # not a recording: ignored
    sink = Timed()
    assert Player(open_playlist(find_recordings(tmp_path)), Bus([sink]), gap=0).play() == 3
    assert [s.run_id for s in sink.of(RunStart)] == ["01-a", "02-b", "03-c"]


def test_killed_recording_replays_to_its_last_step_with_a_notice(tmp_path, caplog):
    folder = killed_recording(tmp_path / "run", kill_after_step=3, steps=10)
    sink = Timed()
    Player(open_playlist([folder]), Bus([sink])).play()
    assert [f.step for f in sink.of(StepFrame)] == [0, 1, 2, 3]
    end = sink.events[-1]
    assert (end.status, end.steps_done, end.error) == ("cancelled", 4, "recording truncated")
    assert "truncated" in caplog.text and "4 of 10 steps" in caplog.text


def test_half_written_step_line_is_not_replayed(tmp_path):
    folder = synthetic_recording(tmp_path / "run", steps=4, finish=False)
    with open(folder / "steps.jsonl", "a") as f:
        f.write('{"step": 4, "total": 4, "time')  # the writer died mid-line
    assert len(load_recording(folder)) == 4


def test_damaged_step_file_ends_the_run_as_failed_and_says_where(tmp_path, caplog):
    folder = synthetic_recording(tmp_path / "run", steps=5, step_seconds=0.001)
    (folder / "cumulative" / "000002.npy").write_bytes(b"\x93NUMPY garbage")
    sink = Timed()
    Player(open_playlist([folder]), Bus([sink])).play()
    assert [f.step for f in sink.of(StepFrame)] == [0, 1]
    end = sink.events[-1]
    assert end.status == "failed" and "step 2 is damaged" in end.error
    assert "step 2 is damaged" in caplog.text


def test_a_bad_entry_of_a_playlist_is_skipped(tmp_path, caplog):
    synthetic_recording(tmp_path / "a", steps=2, step_seconds=0.001, run_id="good")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "manifest.json").write_text("{broken")
    recs = open_playlist(find_recordings(tmp_path))
    assert [r.start.run_id for r in recs] == ["good"]
    assert "skipping" in caplog.text and "corrupt" in caplog.text


def test_speed_parsing():
    assert parse_speed("2") == 2.0 and parse_speed("max") == float("inf")
    for bad in ("0", "-1", "fast", "5000"):
        with pytest.raises(ReplayError):
            parse_speed(bad)


def test_max_speed_plays_without_waiting(tmp_path):
    folder = synthetic_recording(tmp_path / "run", steps=5, step_seconds=10.0)  # 50 s at speed 1
    sink = Timed()
    t0 = time.monotonic()
    Player(open_playlist([folder]), Bus([sink]), speed="max").play()
    assert len(sink.of(StepFrame)) == 5
    assert time.monotonic() - t0 < sink.of(RunEnd)[0].elapsed / 10  # no waiting: a fraction of the recorded time


# -- the command: one clear line for every bad input ----------------------------------------
def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_cli_missing_folder(tmp_path, capsys):
    assert main(["replay", str(tmp_path / "nope"), "--port", "0", "--osc-in-port", "0"]) == 2
    assert "does not exist" in _error_line(capsys)


def test_cli_foreign_folder(tmp_path, capsys):
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8")
    assert main(["replay", str(tmp_path), "--port", "0", "--osc-in-port", "0"]) == 2
    assert "is neither a recording (no manifest.json) nor a folder of recordings" in _error_line(capsys)


@pytest.mark.parametrize("manifest, message", [
    ("{not json", "is unreadable or corrupt"),
    ('{"format": "something-else"}', "is not an attention-bridge recording manifest"),
    ('{"format": "attention-bridge-recording", "version": 99}', "uses recording format version 99"),
    ('{"format": "attention-bridge-recording", "version": 1}', "is missing or has a bad field"),
])
def test_cli_corrupt_manifest(tmp_path, capsys, manifest, message):
    (tmp_path / "manifest.json").write_text(manifest)
    assert main(["replay", str(tmp_path), "--port", "0", "--osc-in-port", "0"]) == 2
    assert message in _error_line(capsys)


def test_cli_recording_without_steps(tmp_path, capsys):
    folder = synthetic_recording(tmp_path / "run", steps=0, finish=False)
    assert main(["replay", str(folder), "--port", "0", "--osc-in-port", "0"]) == 2
    assert "has no completed steps to replay" in _error_line(capsys)


def test_cli_plays_a_recording_once(tmp_path, capsys):
    folder = synthetic_recording(tmp_path / "run", steps=3, step_seconds=0.001)
    assert main(["replay", str(folder), "--port", "0", "--osc-in-port", "0", "--osc-out", "127.0.0.1:9",
                 "--no-progress", "--speed", "10"]) == 0
    out = capsys.readouterr().out
    assert "websocket:  ws://127.0.0.1:" in out and "1 recording(s)" in out


def test_cli_loop_stops_cleanly_on_sigterm(tmp_path):
    """A looping show is stopped by its service manager: SIGTERM ends it with status 0."""
    import signal
    import subprocess
    import sys

    from replay_recordings import REPO

    folder = synthetic_recording(tmp_path / "run", steps=3, step_seconds=0.05)
    proc = subprocess.Popen([sys.executable, "run_bridge.py", "replay", str(folder), "--loop", "--gap", "0",
                             "--port", "0", "--osc-in-port", "0", "--osc-out", "127.0.0.1:9", "--no-progress"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("replay:"):
                break
        seen = []
        for line in proc.stderr:  # until the second pass over the playlist has begun
            seen.append(line)
            if sum("replaying run" in x for x in seen) >= 2:
                break
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        err = "".join(seen) + err
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert err.count("replaying run") >= 2 and "Traceback" not in err


def test_looping_folder_picks_up_new_runs_but_not_one_still_being_recorded(tmp_path):
    from bridge.replay import playlist_source

    synthetic_recording(tmp_path / "a", steps=2, step_seconds=0.02, run_id="run-a")
    source = playlist_source(tmp_path)
    sink = Timed()
    player = Player(source(), Bus([sink]), loop=True, gap=0, refresh=source)
    t = play_in_thread(player)
    sink.wait_for(lambda ev: any(isinstance(e, RunStart) for e in ev))
    synthetic_recording(tmp_path / "b", steps=2, step_seconds=0.02, run_id="run-b")  # finished while the show runs
    synthetic_recording(tmp_path / "c", steps=2, step_seconds=0.02, run_id="run-c", finish=False)  # still writing
    sink.wait_for(lambda ev: len([e for e in ev if isinstance(e, RunStart) and e.run_id == "run-b"]) >= 2)
    player.stop()
    t.join(5)
    played = {s.run_id for s in sink.of(RunStart)}
    assert played == {"run-a", "run-b"}


def test_a_run_left_running_is_live_while_fresh_and_truncated_once_stale(tmp_path):
    from bridge.replay import being_recorded

    rec = load_recording(killed_recording(tmp_path / "run", kill_after_step=1, steps=4))
    assert being_recorded(rec)  # just written: a recorder may still be at it
    assert not being_recorded(rec, now=time.time() + 60)  # nothing for a minute: it was killed
    done = load_recording(synthetic_recording(tmp_path / "done", steps=2))
    assert not being_recorded(done)


def test_a_run_cancelled_live_replays_with_the_same_end(tmp_path):
    """A VJ prompt interrupting a run leaves a cancelled recording; its replay ends the same way."""
    from bridge.recording import Recorder

    start, frames, _ = synthetic_frames(steps=8, step_seconds=0.001)
    live_end = RunEnd(start.run_id, "cancelled", 3, 0.0035, None, "")
    rec = Recorder(tmp_path / "run")
    rec.on_run_start(start)
    for f in frames[:3]:
        rec.on_step(f)
    rec.on_run_end(live_end)
    sink = Timed()
    Player(open_playlist([tmp_path / "run"]), Bus([sink])).play()
    end = sink.events[-1]
    assert (end.status, end.steps_done, end.elapsed, end.image, end.error) == ("cancelled", 3, 0.0035, None, "")
    assert len(sink.of(StepFrame)) == 3
