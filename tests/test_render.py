"""`run_bridge.py render`: a recorded run, a summary line, and one-line errors for bad input."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bridge.cli import main
from bridge.recording import load_recording

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--model", "builtin:tiny", "--device", "cpu", "--no-progress"]


def test_render_records_a_run_and_prints_a_summary(tmp_path, capsys):
    out = tmp_path / "apple"
    code = main(["render", "--prompt", "a red apple on a wooden table", "--steps", "6", "--seed", "7",
                 "--width", "64", "--height", "48", "--map-size", "24x32", "--vae-every", "3",
                 "--phases", "0.5,0.25,0.25", "--out", str(out), *TINY])
    printed = capsys.readouterr().out
    assert code == 0
    assert "completed: 6/6 steps" in printed and "a · red · apple · on · a · wooden · table" in printed
    assert "dropped words: none" in printed and str(out) in printed
    rec = load_recording(out)
    assert len(rec) == 6 and rec.status == "completed"
    assert tuple(rec.start.map_size) == (24, 32) and rec.start.phases.noise == 0.5
    assert rec.manifest["extra"]["vae_every"] == 3
    frames = list(rec.frames())
    assert [f.phase for f in frames] == ["noise"] * 3 + ["structure", "detail", "detail"]
    # steps 3 and 6 carry a full VAE decode, the others the linear preview: they differ in kind
    assert frames[2].preview.shape == (48, 64, 3)
    assert (out / "final.png").is_file() and (out / "daam.npy").is_file()
    assert np.load(out / "daam.npy").shape == (7, 24, 32)


def test_render_reports_dropped_words(tmp_path, capfd):
    prompt = " ".join(f"word{i}" for i in range(60))  # well over 75 tokens
    assert main(["render", "--prompt", prompt, "--steps", "1", "--out", str(tmp_path / "long"), *TINY]) == 0
    printed = capfd.readouterr().out
    assert "dropped words: " in printed and "word59" in printed.split("dropped words: ")[1]
    assert "word59" in load_recording(tmp_path / "long").start.dropped_words
    # 300 words: the summary stays one readable line that still names the last and the count
    prompt = " ".join(f"word{i}" for i in range(300))
    assert main(["render", "--prompt", prompt, "--steps", "1", "--out", str(tmp_path / "longer"), *TINY]) == 0
    printed = capfd.readouterr()
    summary = [line for line in printed.out.splitlines() if line.startswith("completed:")]
    assert len(summary) == 1 and len(summary[0]) < 900, summary
    assert "word299" in summary[0] and "words)" in summary[0]
    assert "The following part of your input was truncated" not in printed.err  # not the cut text again


@pytest.mark.parametrize(
    "extra,expected",
    [
        (["--steps", "0"], "steps must be from 1 to"),
        (["--width", "70"], "width must be a multiple of 8"),
        (["--guidance", "nan"], "guidance must be a number"),
        (["--map-size", "big"], "--map-size must be N or HxW"),
        (["--phases", "0.5,0.5,0.5"], "--phases must be three fractions"),
        (["--layers", "nowhere"], "no cross-attention layer matches nowhere"),
        (["--model", "/no/such/folder"], "does not exist"),
        (["--width", "1024", "--height", "1024"], "16,384 latent positions (128×128), over the 4,096 this CPU runs"),
        (["--max-latent", "-1"], "--max-latent must be 0"),
    ],
)
def test_bad_input_is_one_line_and_nothing_is_written(tmp_path, capsys, extra, expected):
    out = tmp_path / "never"
    args = ["render", "--prompt", "a cat", "--out", str(out), *TINY, *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1
    assert not out.exists()


def test_an_unwritable_out_fails_before_the_model_loads(tmp_path, capsys, caplog):
    (tmp_path / "file").write_text("not a folder")
    assert main(["render", "--prompt", "a cat", "--out", str(tmp_path / "file" / "run"), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write the recording folder") and "choose another --out" in err
    assert "loading model" not in caplog.text


def test_a_larger_max_latent_lets_a_cpu_render_more(tmp_path, capsys):
    out = tmp_path / "big"
    assert main(["render", "--prompt", "a cat", "--steps", "1", "--width", "576", "--height", "512",
                 "--max-latent", "4608", "--out", str(out), *TINY]) == 0
    assert load_recording(out).manifest["width"] == 576


def test_render_refuses_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["render", "--prompt", "a cat", "--out", str(tmp_path), *TINY]) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_render_help_teaches():
    result = subprocess.run([sys.executable, "run_bridge.py", "render", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0
    for text in ("--prompt", "--model", "--map-size", "--phases", "--include-special", "examples:", "builtin:tiny"):
        assert text in result.stdout


def test_render_fails_when_its_recording_is_incomplete(tmp_path, capsys, monkeypatch):
    """A disk error in the recorder's thread is not lost: render says so and exits 1."""
    import os

    real_replace = os.replace

    def replace(src, dst, *a, **kw):
        if str(dst).endswith(os.path.join("cumulative", "000001.npy")):
            raise OSError(28, "No space left on device (injected)")
        return real_replace(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", replace)
    out = tmp_path / "full"
    assert main(["render", "--prompt", "a cat", "--steps", "3", "--out", str(out), *TINY]) == 1
    printed = capsys.readouterr().out
    assert "completed" not in printed and f"the recording in {out} is incomplete" in printed
    assert "step 1" in printed and "No space left" in printed
    assert len(load_recording(out)) == 1
