"""Recordings made by the engine: complete, reproducible, and readable after a kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bridge.bus import Bus
from bridge.engine import GenerationRequest
from bridge.recording import Recorder, load_recording

ROOT = Path(__file__).resolve().parent.parent


def _record(engine, folder, req):
    end = engine.generate(req, Bus([Recorder(folder)]))
    assert end.status == "completed", end.error
    return load_recording(folder)


def test_recording_holds_every_step_and_the_manifest(tiny_engine, tmp_path):
    req = GenerationRequest("a red apple on a wooden table", negative_prompt="blurry", seed=7, steps=5, width=64, height=48)
    rec = _record(tiny_engine, tmp_path / "run", req)
    m = rec.manifest
    assert m["status"] == "completed" and m["steps_done"] == 5 and not rec.truncated
    assert m["words"] == ["a", "red", "apple", "on", "a", "wooden", "table"]
    assert m["word_token_indices"][0] == [1]
    assert (m["prompt"], m["negative_prompt"], m["seed"], m["steps"]) == (req.prompt, "blurry", 7, 5)
    assert (m["width"], m["height"], m["model"], m["scheduler"]) == (64, 48, "builtin:tiny", "DDIMScheduler")
    assert m["phases"] == {"noise": 0.2, "structure": 0.4, "detail": 0.4, "blend": 0.1}
    assert set(m["extra"]["versions"]) >= {"torch", "diffusers", "transformers", "numpy", "bridge"}
    frames = list(rec.frames())
    assert [f.step for f in frames] == list(range(5))
    assert [f.phase for f in frames] == ["noise", "structure", "structure", "detail", "detail"]
    for f in frames:
        assert f.maps.dtype == np.float16 and f.maps.shape == (7, *m["map_size"])
        assert f.preview.shape == (48, 64, 3) and f.preview.dtype == np.uint8
        assert abs(sum(f.mass) - 1) < 1e-6
    # cumulative = running sum of the step maps (float16 rounding aside)
    total = np.sum([f.maps.astype(np.float32) for f in frames], axis=0)
    np.testing.assert_allclose(frames[-1].cumulative.astype(np.float32), total, rtol=3e-3, atol=1e-3)
    np.testing.assert_array_equal(rec.daam(), frames[-1].cumulative)
    assert rec.final_image().shape == (48, 64, 3)


def test_same_seed_same_recording(tiny_engine, tmp_path):
    req = GenerationRequest("a blue bird, on a branch", seed=11, steps=4)
    a = _record(tiny_engine, tmp_path / "a", req)
    b = _record(tiny_engine, tmp_path / "b", req)
    c = _record(tiny_engine, tmp_path / "c", GenerationRequest("a blue bird, on a branch", seed=12, steps=4))
    for fa, fb in zip(a.frames(), b.frames()):
        assert fa.maps.tobytes() == fb.maps.tobytes()
        assert fa.cumulative.tobytes() == fb.cumulative.tobytes()
        assert fa.preview.tobytes() == fb.preview.tobytes()
        assert (fa.timestep, fa.phase, fa.mass) == (fb.timestep, fb.phase, fb.mass)
    assert a.final_image().tobytes() == b.final_image().tobytes()
    assert a.daam().tobytes() == b.daam().tobytes()
    assert a.final_image().tobytes() != c.final_image().tobytes()  # the seed matters
    assert a.daam().tobytes() != c.daam().tobytes()


def test_killed_render_leaves_a_readable_partial_recording(tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, str(ROOT / "run_bridge.py"), "render", "--prompt", "a slow red apple", "--model", "builtin:tiny",
           "--steps", "400", "--seed", "3", "--no-progress", "--device", "cpu", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    steps_file = out / "steps.jsonl"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if steps_file.is_file() and steps_file.read_text().count("\n") >= 3:
                break
            assert proc.poll() is None, "render exited before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("no steps were recorded within 120 s")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    rec = load_recording(out)
    assert rec.status == "running" and rec.truncated
    n = len(rec)
    assert 3 <= n < 400
    frames = list(rec.frames())  # every listed step is fully on disk
    assert [f.step for f in frames] == list(range(n))
    assert rec.daam().shape == frames[-1].maps.shape
    assert rec.run_end().status == "cancelled"
    assert json.loads((out / "manifest.json").read_text())["steps"] == 400
