"""Exports: DAAM masks (Eqn. 7), heat maps, overlays, mass curves and stabilisation steps."""

from __future__ import annotations

import csv
from pathlib import Path
import json

import numpy as np
import pytest
from PIL import Image

from bridge import masks
from bridge.cli import main
from bridge.export import ExportOptions, export, file_stem
from bridge.timelapse import colormaps, heatmap
from replay_recordings import killed_recording, synthetic_recording


# -- Eqn. 7 and IoU ------------------------------------------------------------------------
def test_mask_is_eqn7_threshold_of_each_words_own_peak():
    d = np.array([[[0.0, 1.0], [4.0, 10.0]],  # peak 10: threshold 4 (inclusive)
                  [[0.2, 0.1], [0.0, 0.05]]], np.float32)  # peak 0.2: threshold 0.08
    m = masks.daam_mask(d, tau=0.4)
    assert m.tolist() == [[[False, False], [True, True]], [[True, True], [False, False]]]


def test_mask_of_a_map_without_attention_is_empty():
    assert not masks.daam_mask(np.zeros((4, 4)), 0.4).any()
    assert masks.daam_mask(np.ones((4, 4)), 0.0).all()


def test_iou_counts_overlap_over_union_and_two_empty_masks_agree():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    assert masks.iou(a, b) == 1.0
    a[:2] = True  # 8 pixels
    b[1:3] = True  # 8 pixels, 4 shared
    assert masks.iou(a, b) == pytest.approx(4 / 12)


def test_stabilisation_is_first_step_after_which_iou_stays_high():
    ious = np.array([[0.95], [0.5], [0.92], [0.97], [1.0]])
    assert masks.stabilisation_steps(ious, np.arange(5), 0.9) == [2]
    assert masks.stabilisation_steps(np.zeros((0, 2)), np.arange(0), 0.9) == [None, None]


def two_block_maps(step: int) -> np.ndarray:
    """Word 0 attends block A for steps 0..3, then block B; word 1 always attends block C.

    Word 0's cumulative map at step t is 4 on A (from t = 3 on) and t − 3 on B.  With τ = 0.4
    A leaves the mask once 4 < 0.4 (t − 3), i.e. from step 14; before that the mask is A ∪ B
    (IoU 0.5 with the final mask B).  So word 0 stabilises at step 14 and word 1 at step 0.
    """
    m = np.zeros((2, 8, 8), np.float32)
    if step <= 3:
        m[0, :4, :4] = 1.0  # A
    else:
        m[0, 4:, 4:] = 1.0  # B
    m[1, :4, 4:] = 1.0  # C
    return m


def test_stabilisation_step_of_a_recorded_run_is_known_answer(tmp_path):
    rec = synthetic_recording(tmp_path / "run", words=("cat", "hat"), steps=20, map_hw=(8, 8), image_hw=(32, 32),
                              maps_for_step=two_block_maps)
    result = export(rec, tmp_path / "out", ExportOptions(what=("curves",)), progress=False)
    assert [s["stable_step"] for s in result["stability"]] == [14, 0]
    rows = list(csv.DictReader(open(tmp_path / "out" / "stability.csv")))
    assert [(r["word"], r["stable_step"]) for r in rows] == [("cat", "14"), ("hat", "0")]
    # measured, not the threshold: where in the 20 steps (0..19), and the IoU from there on
    assert [(r["stable_at"], r["iou_after"], r["iou_threshold"]) for r in rows] == [
        ("0.737", "1.0000", "0.9"), ("0.000", "1.0000", "0.9")]
    curves = list(csv.DictReader(open(tmp_path / "out" / "curves.csv")))
    assert len(curves) == 20
    assert float(curves[13]["iou_00_cat"]) == pytest.approx(0.5)
    assert float(curves[14]["iou_00_cat"]) == 1.0
    # With τ = 0.2, A (4 ≥ 0.2 · 16) stays in the final mask: the mask is A ∪ B from step 4 on.
    result = export(rec, tmp_path / "out2", ExportOptions(what=("curves",), tau=0.2), progress=False)
    assert result["stability"][0]["stable_step"] == 4


def test_curves_carry_the_mass_streamed_live_and_a_plot(tmp_path):
    rec = synthetic_recording(tmp_path / "run", steps=6)
    export(rec, tmp_path / "out", ExportOptions(what=("curves",)), progress=False)
    live = [json.loads(line)["mass"] for line in open(rec / "steps.jsonl")]
    rows = list(csv.DictReader(open(tmp_path / "out" / "curves.csv")))
    got = [[float(r[f"mass_{file_stem(i, w)}"]) for i, w in enumerate(("a", "red", "apple"))] for r in rows]
    np.testing.assert_allclose(got, live, atol=1e-6)
    plot = Image.open(tmp_path / "out" / "curves.png")
    assert plot.size == (960, 540)
    assert len(set(np.asarray(plot.convert("RGB")).reshape(-1, 3).view("u1,u1,u1").ravel().tolist())) > 10


def test_image_exports_are_image_sized_and_masks_follow_eqn7(tmp_path):
    rec = synthetic_recording(tmp_path / "run", steps=5, map_hw=(16, 16), image_hw=(64, 48))
    result = export(rec, tmp_path / "out", ExportOptions(what=("maps", "overlays", "masks"), tau=0.4, size=0), progress=False)
    assert {k: len(v) for k, v in result["files"].items()} == {"maps": 3, "overlays": 3, "masks": 3}
    daam = np.load(rec / "daam.npy").astype(np.float32)
    final = np.asarray(Image.open(rec / "final.png"))
    for i, word in enumerate(("a", "red", "apple")):
        stem = file_stem(i, word) + ".png"
        mask = np.asarray(Image.open(tmp_path / "out" / "masks" / stem))
        assert mask.shape == (64, 48) and set(np.unique(mask)) <= {0, 255}
        # Eqn. 7 on the map upsampled to the image (independent resize here).
        big = np.maximum(np.asarray(Image.fromarray(daam[i], "F").resize((48, 64), Image.BICUBIC)), 0)
        np.testing.assert_array_equal(mask == 255, big >= 0.4 * big.max())
        assert 0 < (mask == 255).mean() < 0.5  # a blob, not the whole image
        overlay = np.asarray(Image.open(tmp_path / "out" / "overlays" / stem))
        peak = np.unravel_index(np.argmax(big), big.shape)
        far = np.unravel_index(np.argmin(big), big.shape)
        assert np.abs(overlay[far].astype(int) - final[far]).max() <= 2  # no heat: the image shows
        hottest = colormaps.lut("inferno")[255].astype(float)  # full heat: 60 % colour, 40 % image
        np.testing.assert_allclose(overlay[peak], 0.4 * final[peak] + 0.6 * hottest, atol=1.01)
        assert Image.open(tmp_path / "out" / "maps" / stem).size == (48, 64)


def test_image_exports_default_to_512_pixels_with_smooth_maps(tmp_path):
    rec = synthetic_recording(tmp_path / "run", steps=3, map_hw=(16, 16), image_hw=(64, 48))
    export(rec, tmp_path / "out", ExportOptions(what=("maps", "overlays", "masks")), progress=False)
    stem = file_stem(2, "apple") + ".png"
    for kind in ("maps", "overlays", "masks"):
        assert Image.open(tmp_path / "out" / kind / stem).size == (384, 512)  # long side 512, aspect kept
    daam = np.load(rec / "daam.npy").astype(np.float32)[2]
    big = np.maximum(np.asarray(Image.fromarray(daam, "F").resize((384, 512), Image.BICUBIC)), 0)
    mask = np.asarray(Image.open(tmp_path / "out" / "masks" / stem)) == 255
    np.testing.assert_array_equal(mask, big >= 0.4 * big.max())  # Eqn. 7 at the export size
    heat = np.asarray(Image.open(tmp_path / "out" / "maps" / stem).convert("L")).astype(int)
    assert np.abs(np.diff(heat, axis=1)).max() < 40  # smooth: no 32-pixel blocks of one colour


def test_truncated_recording_exports_from_its_last_step(tmp_path, caplog):
    rec = killed_recording(tmp_path / "run", kill_after_step=3)
    result = export(rec, tmp_path / "out", progress=False)
    assert result["truncated"] and result["steps"] == 4
    assert len(list(csv.DictReader(open(tmp_path / "out" / "curves.csv")))) == 4
    assert "truncated" in caplog.text


def test_cli_exports_everything_by_default(tmp_path, capsys):
    rec = synthetic_recording(tmp_path / "run", steps=4)
    assert main(["export", str(rec), "--no-progress"]) == 0
    out = rec / "export"
    assert sorted(p.name for p in out.iterdir()) == ["curves.csv", "curves.png", "maps", "masks", "overlays", "stability.csv"]


@pytest.mark.parametrize("args, message", [
    (["--what", "maps,videos"], "--what takes a comma-separated list of maps, overlays, masks, curves, self"),
    (["--tau", "1.5"], "tau must be within 0..1"),
    (["--opacity", "-1"], "opacity must be within 0..1"),
    (["--size", "-5"], "size must be a whole number of pixels within 0..8192"),
])
def test_cli_bad_options_get_one_line(tmp_path, capsys, args, message):
    rec = synthetic_recording(tmp_path / "run", steps=2)
    assert main(["export", str(rec), "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_cli_foreign_folder_gets_one_clear_error(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["export", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {tmp_path} has no manifest.json; it is not a recording"


def test_word_file_names_are_safe_and_distinct():
    assert file_stem(3, "apple") == "03_apple"
    assert file_stem(4, ",") == "04_u002c"
    assert file_stem(5, "don't") == "05_don_t"
    assert file_stem(6, "../x") == "06_x"


def test_heat_is_clamped_after_bicubic_overshoot():
    m = np.zeros((8, 8), np.float32)
    m[4, 4] = 1.0
    up = heatmap.upsample(m, (32, 32))
    assert up.min() >= 0.0 and up.max() > 0.5


def test_export_of_a_real_engine_run(tiny_engine, tmp_path_factory, tmp_path):
    """End to end on a run of the tiny built-in model: every word gets its files, masks are
    Eqn. 7 of the recorded DAAM map, curves have one row per step."""
    from replay_recordings import engine_recording

    rec = engine_recording(tmp_path_factory, tiny_engine)
    manifest = json.loads((rec / "manifest.json").read_text())
    words = manifest["words"]
    result = export(rec, tmp_path / "out", ExportOptions(size=0), progress=False)  # at the image's own size
    for kind in ("maps", "overlays", "masks"):
        assert len(result["files"][kind]) == len(words)
    daam = np.load(rec / "daam.npy").astype(np.float32)
    h, w = manifest["height"], manifest["width"]
    for i, word in enumerate(words):
        mask = np.asarray(Image.open(tmp_path / "out" / "masks" / f"{file_stem(i, word)}.png")) == 255
        big = np.maximum(np.asarray(Image.fromarray(daam[i], "F").resize((w, h), Image.BICUBIC)), 0)
        np.testing.assert_array_equal(mask, big >= 0.4 * big.max())
    rows = list(csv.DictReader(open(tmp_path / "out" / "curves.csv")))
    assert [int(r["step"]) for r in rows] == list(range(manifest["steps_done"]))
    assert all(s["stable_step"] is not None for s in result["stability"])


def test_self_attention_regions_export_one_overlay_each(tiny_engine, tmp_path):
    from bridge.bus import Bus
    from bridge.engine import GenerationRequest
    from bridge.recording import Recorder
    from bridge.regions import from_text, parse_list

    rec = Recorder(tmp_path / "run")
    regions = parse_list(["box:8,8,40,40", "pixel:50,12"], from_text)
    tiny_engine.generate(GenerationRequest("a red apple", steps=2, regions=regions), Bus([rec]))
    rec.close()
    result = export(tmp_path / "run", tmp_path / "out", ExportOptions(what=("self",), size=256), progress=False)
    assert sorted(Path(p).name for p in result["files"]["self"]) == ["curves.csv", "r0.png", "r1.png"]
    rows = list(csv.DictReader(open(tmp_path / "out" / "self" / "curves.csv")))
    assert [r["step"] for r in rows] == ["0", "1"] and set(rows[0]) == {"step", "inside_r0", "inside_r1"}
    # the box's share of its own map inside itself, measured here independently
    maps = np.load(tmp_path / "run" / "self" / "000001.npy").astype(np.float32)
    h, w = maps.shape[1:]
    assert (h, w) == (64, 64)  # one map cell per image pixel: the box 8..40 is rows and columns 8..39
    expected = maps[0][8:40, 8:40].sum() / maps[0].sum()
    assert float(rows[1]["inside_r0"]) == pytest.approx(expected, abs=1e-3)
    box = np.asarray(Image.open(tmp_path / "out" / "self" / "r0.png"))
    assert box.shape == (256, 256, 3)
    assert (box[32, 32:160] == 255).all()  # the box's outline, at the export's scale (×4)
    plain = export(synthetic_recording(tmp_path / "plain", steps=2), tmp_path / "out2", progress=False)
    assert "self" not in plain["files"] and not (tmp_path / "out2" / "self").exists()
