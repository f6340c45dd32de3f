"""Recordings for the replay, timelapse and export tests.

``synthetic_recording`` feeds the real Recorder with frames whose maps are drawn by hand, so a
test knows the right answer (where a word is, when it settles).  ``engine_recording`` records a
real run of the tiny built-in model, the way `render` does; it is cached per test session.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from bridge.frames import RunEnd, RunStart, StepFrame, attention_mass
from bridge.phases import PhaseSchedule
from bridge.recording import Recorder

REPO = Path(__file__).resolve().parents[1]


def blob(h: int, w: int, cy: float, cx: float, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.exp(-(((yy + 0.5) / h - cy) ** 2 + ((xx + 0.5) / w - cx) ** 2) / (2 * radius**2)).astype(np.float32)


def synthetic_frames(words=("a", "red", "apple"), steps=8, map_hw=(16, 16), image_hw=(64, 48), step_seconds=0.02,
                     maps_for_step=None, run_id="synthetic-run"):
    """RunStart, the StepFrames and RunEnd of a made-up run.

    ``maps_for_step(step) -> (W, h, w)`` draws the maps; by default word k is a blob that
    grows in place, at a different spot per word.
    """
    phases = PhaseSchedule()
    n = len(words)
    h, w = map_hw
    ih, iw = image_hw
    start = RunStart(run_id, " ".join(words), "", 7, steps, 7.5, iw, ih, map_hw, tuple(words),
                     tuple((i + 1,) for i in range(n)), (), "synthetic", "test-scheduler", phases, {})

    def default_maps(step):
        return np.stack([blob(h, w, 0.25 + 0.5 * (k % 2), (k + 0.5) / n, 0.12) * (1 + step) for k in range(n)])

    draw = maps_for_step or default_maps
    cumulative = np.zeros((n, h, w), np.float32)
    frames = []
    yy, xx = np.mgrid[0:ih, 0:iw]
    for s in range(steps):
        maps = np.asarray(draw(s), np.float32).astype(np.float16)
        cumulative = cumulative + maps.astype(np.float32)
        # Smooth gradients (video codecs keep them): red across, green down, blue with the step.
        preview = np.stack([xx * 255 // max(iw - 1, 1), yy * 255 // max(ih - 1, 1),
                            np.full_like(xx, 40 + 200 * s // max(steps, 1))], axis=-1).astype(np.uint8)
        frames.append(StepFrame(run_id, s, steps, 1000.0 - s * 1000.0 / steps, phases.phase_at(s, steps),
                                phases.weights_at(s, steps), tuple(words), maps, cumulative.astype(np.float16),
                                attention_mass(maps), preview, step_seconds * (s + 1), {"step": step_seconds}))
    final = np.full((ih, iw, 3), 200, np.uint8)
    end = RunEnd(run_id, "completed", steps, step_seconds * steps + 0.005, final)
    return start, frames, end


def synthetic_recording(folder: Path, *, finish: bool = True, **kwargs) -> Path:
    """Record a synthetic run into ``folder`` with the real Recorder; unfinished if ``finish`` is False."""
    start, frames, end = synthetic_frames(**kwargs)
    rec = Recorder(folder)
    rec.on_run_start(start)
    for f in frames:
        rec.on_step(f)
    if finish:
        rec.on_run_end(end)
    else:
        rec.close()
    return folder


def killed_recording(folder: Path, kill_after_step: int, steps: int = 10) -> Path:
    """A recording whose writer process was SIGKILLed right after writing ``kill_after_step``:
    the manifest still says "running", exactly what a crash or power cut leaves behind."""
    code = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO)!r}); sys.path.insert(0, {str(Path(__file__).parent)!r})
        from replay_recordings import synthetic_frames
        from bridge.recording import Recorder
        start, frames, end = synthetic_frames(steps={steps})
        rec = Recorder({str(folder)!r})
        rec.on_run_start(start)
        for f in frames:
            rec.on_step(f)
            if f.step == {kill_after_step}:
                rec.flush()  # the writer thread has written the step: now kill
                os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return folder


def engine_recording(tmp_path_factory, engine, steps: int = 6) -> Path:
    """A real run of ``engine`` (the tiny built-in model) recorded by the Recorder, as `render`
    does; made once per test session and shared by the replay, timelapse and export tests."""
    from bridge.bus import Bus
    from bridge.engine import GenerationRequest

    folder = tmp_path_factory.getbasetemp() / f"engine-run-{steps}"
    if not (folder / "manifest.json").exists():
        req = engine.validate(GenerationRequest("a red apple on a wooden table", seed=7, steps=steps))
        end = engine.generate(req, Bus([Recorder(folder)]))
        assert end.status == "completed", end.error
    return folder
