"""Retention of recorded runs: oldest first, by count and by bytes; never a folder that is not a
recording, the run being written, or a run a reader holds (in another process)."""

import os
import subprocess
import sys
import time

import pytest

from bridge.recording.retention import Retention, hold, prune, recorded_runs


def _run(root, name, age_s, size=1000):
    folder = root / name
    folder.mkdir()
    (folder / "steps.jsonl").write_bytes(b"x" * size)
    manifest = folder / "manifest.json"
    manifest.write_text("{}")
    t = time.time() - age_s
    os.utime(manifest, (t, t))
    return folder


@pytest.fixture
def root(tmp_path):
    for i in range(5):
        _run(tmp_path, f"run{i}", age_s=100 - i)  # run0 oldest
    (tmp_path / "notes").mkdir()  # not a recording
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    (tmp_path / "readme.txt").write_text("keep me too")
    return tmp_path


def _names(root):
    return [f.name for f, _, _ in recorded_runs(root)]


def test_keeps_the_newest_runs_and_nothing_else_is_touched(root):
    deleted = prune(root, Retention(keep_runs=3))
    assert [f.name for f in deleted] == ["run0", "run1"]
    assert _names(root) == ["run2", "run3", "run4"]
    assert (root / "notes" / "todo.txt").read_text() == "keep me"
    assert (root / "readme.txt").exists()


def test_bytes_bound_deletes_oldest_until_under(root):
    one = recorded_runs(root)[0][2]
    prune(root, Retention(max_bytes=2 * one + 1))
    assert _names(root) == ["run3", "run4"]


def test_unlimited_deletes_nothing(root):
    assert prune(root, Retention()) == []
    assert len(_names(root)) == 5


def test_the_run_being_written_is_never_deleted(root):
    prune(root, Retention(keep_runs=3), protect=[root / "run0"])
    assert _names(root) == ["run0", "run3", "run4"]  # the oldest, but protected: the next two went


def test_a_run_held_by_a_reader_in_another_process_is_skipped_then_released(root):
    reader = subprocess.Popen(
        [sys.executable, "-c", "import sys; from bridge.recording.retention import hold\n"
         "with hold(sys.argv[1]):\n    print('held', flush=True); sys.stdin.readline()", str(root / "run0")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    try:
        assert reader.stdout.readline().strip() == "held"
        prune(root, Retention(keep_runs=4))
        assert _names(root) == ["run0", "run2", "run3", "run4"]  # run1 went instead
    finally:
        reader.communicate("\n", timeout=30)
    prune(root, Retention(keep_runs=3))
    assert _names(root) == ["run2", "run3", "run4"]


def test_hold_in_this_process_works_on_a_read_only_folder(tmp_path):
    folder = _run(tmp_path, "ro", 0)
    folder.chmod(0o555)
    try:
        with hold(folder):
            pass
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "10"])
def test_bad_policy_is_one_sentence(bad):
    with pytest.raises(ValueError, match="keep_runs must be a whole number"):
        Retention(keep_runs=bad)
