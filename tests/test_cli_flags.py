"""`render` and `serve` take each other's spelling of the same flag, and check the limits
table before a model is loaded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.cli import build_parser, main
from bridge.errors import UserError
from bridge.limits import LIMITS
from bridge.presets import PresetError, apply_overrides, load_preset
from bridge.recording import load_recording
from bridge.threads import MAX_THREADS

ROOT = Path(__file__).resolve().parents[1]


def parse(*argv):
    return build_parser().parse_args(list(argv))


@pytest.mark.parametrize("flag", ["--negative", "--negative-prompt"])
def test_both_spellings_of_the_negative_prompt(flag):
    assert parse("render", "--prompt", "a cat", flag, "blurry").negative == "blurry"
    serve = parse("serve", flag, "blurry")
    assert apply_overrides(load_preset("live").values, serve)["negative_prompt"] == "blurry"


def test_both_spellings_of_the_phases():
    from bridge.commands.render import parse_phases

    serve = apply_overrides(load_preset("live").values, parse("serve", "--phases", "0.5,0.25,0.25"))
    assert (serve["noise"], serve["structure"], serve["detail"]) == (0.5, 0.25, 0.25)
    with pytest.raises(PresetError, match="give --phases or --phase-noise, not both"):
        apply_overrides(load_preset("live").values, parse("serve", "--phases", "0.5,0.25,0.25", "--phase-noise", "0.5"))
    with pytest.raises(PresetError, match="--phases must be three fractions"):
        apply_overrides(load_preset("live").values, parse("serve", "--phases", "0.5,0.5"))
    r = parse("render", "--prompt", "a cat", "--phase-noise", "0.5", "--phase-structure", "0.25", "--phase-detail", "0.25")
    p = parse_phases(r.phases, r.phase_noise, r.phase_structure, r.phase_detail, r.phase_blend)
    assert (p.noise, p.structure, p.detail) == (0.5, 0.25, 0.25)
    with pytest.raises(UserError, match="not both"):
        parse_phases("0.2,0.4,0.4", noise=0.2)


@pytest.mark.parametrize("dtype", ["fp32", "float32"])
def test_both_spellings_of_the_dtype(dtype):
    assert parse("render", "--prompt", "a cat", "--dtype", dtype).dtype == dtype
    assert apply_overrides(load_preset("live").values, parse("serve", "--dtype", dtype))["dtype"] == dtype


def test_render_takes_serve_spellings_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["render", "--prompt", "a red apple", "--negative-prompt", "blurry", "--steps", "2", "--guidance", "5",
                 "--phase-noise", "0.5", "--phase-structure", "0.25", "--phase-detail", "0.25", "--dtype", "float32",
                 "--model", "builtin:tiny", "--device", "cpu", "--no-progress", "--out", str(out)])
    assert code == 0, capsys.readouterr()
    start = load_recording(out).start
    assert start.negative_prompt == "blurry" and start.phases.noise == 0.5


@pytest.mark.parametrize("args,message", [
    (["--steps", str(LIMITS.steps.hi + 1)], f"steps must be within 1..{LIMITS.steps.hi}"),
    (["--seed", str(LIMITS.seed.hi + 1)], f"seed must be within 0..{LIMITS.seed.hi}"),
    (["--width", str(LIMITS.width.hi + 8)], f"width must be within 0..{LIMITS.width.hi}"),
    (["--map-size", str(LIMITS.map_size.hi + 1)], f"map_size must be within 0..{LIMITS.map_size.hi}"),
    (["--threads", "-1"], f"threads must be within 0..{MAX_THREADS}"),
])
def test_serve_refuses_out_of_table_flags_before_loading_a_model(tmp_path, args, message):
    r = subprocess.run([sys.executable, "run_bridge.py", "--model", str(tmp_path / "absent"), *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("args,message", [
    (["--map-size", str(LIMITS.map_size.hi + 1)], "--map-size sides must be from 1 to"),
    (["--width", "70"], "width must be a multiple of 8, got 70"),
    (["--threads", str(MAX_THREADS + 1)], f"--threads must be from 0 (one fewer than the usable cores) to {MAX_THREADS}"),
])
def test_render_refuses_sizes_before_loading_a_model(tmp_path, capsys, args, message):
    out = tmp_path / "never"
    assert main(["render", "--prompt", "a cat", "--model", str(tmp_path / "absent"), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not out.exists()


@pytest.mark.parametrize("argv,usage,hint", [
    (["render", "--prompt", "x", "--stepz", "3"], "usage: run_bridge.py render", "(did you mean --steps?)"),
    (["timelapse", "runs/x", "-o", "x.mp4", "--layot", "grid"], "usage: run_bridge.py timelapse", "(did you mean --layout?)"),
    (["export", "runs/x", "--bogus", "1"], "usage: run_bridge.py export", "--bogus 1"),
])
def test_a_mistyped_flag_shows_its_commands_usage_and_the_nearest_flag(capsys, argv, usage, hint):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith(usage) and "unrecognized arguments" in err and hint in err
