"""The offline commands that a show machine runs need no torch: `timelapse` and `export`
run, in a fresh Python process, on a recording of a real engine run, and afterwards neither
torch, diffusers nor transformers has been imported.  (`replay` has the same check in
test_replay_wire.py.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from replay_recordings import REPO, engine_recording

# Runs one CLI command, then reports which heavy modules the process imported.
WRAPPER = ("import sys\nfrom bridge.cli import main\n"
           "rc = main(sys.argv[1:])\n"
           "print('HEAVY', sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules), flush=True)\n"
           "sys.exit(rc)\n")


@pytest.fixture(scope="module")
def recording(tiny_engine, tmp_path_factory):
    return engine_recording(tmp_path_factory, tiny_engine)


@pytest.mark.parametrize("command, args, made", [
    ("timelapse", ["-o", "{out}/run.mp4", "--size", "96", "--fps", "10", "--hold", "0.2"], "run.mp4"),
    ("export", ["-o", "{out}/export"], "export/curves.csv"),
])
def test_offline_commands_import_no_torch(recording, tmp_path, command, args, made):
    argv = [command, str(recording), *(a.format(out=tmp_path) for a in args), "--no-progress"]
    r = subprocess.run([sys.executable, "-c", WRAPPER, *argv], cwd=REPO, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout, r.stdout + r.stderr
    assert (tmp_path / made).is_file()
