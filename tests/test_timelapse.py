"""Timelapse videos: frame counts and sizes, what the pixels show, GIF/MP4, truncation, errors."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from bridge import particles as law
from bridge.cli import main
from bridge.recording import load_recording
from bridge.timelapse import TimelapseOptions, render_timelapse
from bridge.timelapse.layouts import Style, make_layout, tile_size
from replay_recordings import killed_recording, synthetic_recording


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return synthetic_recording(tmp_path_factory.mktemp("tl") / "run", steps=6, map_hw=(16, 16), image_hw=(64, 96))


def video_frames(path):
    return [np.asarray(f) for f in iio.imiter(path)]


def test_mp4_has_one_frame_per_step_plus_hold_and_even_size(run, tmp_path):
    opts = TimelapseOptions(layout="single", size=101, fps=10, hold=0.3)
    summary = render_timelapse(run, tmp_path / "a.mp4", opts, progress=False)
    frames = video_frames(tmp_path / "a.mp4")
    assert len(frames) == summary["frames"] == 6 + 3
    h, w = frames[0].shape[:2]
    assert w % 2 == 0 and h % 2 == 0 and w >= 101  # 101 × 67 tile, padded to even for H.264


def test_single_layout_shows_heat_where_the_word_attends(run, tmp_path):
    """The decoded video's image area matches the layout's own render (H.264 is lossy: mean error small),
    and the chosen word's blob is brighter in the overlay than in the plain preview."""
    rec = load_recording(run)
    opts = TimelapseOptions(layout="single", words=("apple",), size=96, fps=8, hold=0, caption=False, timeline=False)
    render_timelapse(rec, tmp_path / "b.mp4", opts, progress=False)
    frames = video_frames(tmp_path / "b.mp4")
    style = Style(tile_size(rec.start, 96), ((2, "apple"),), "inferno", 0.6, "step")
    layout = make_layout("single", rec.start, style)
    last = rec.frame(len(rec) - 1)
    expected = layout.render(last)
    got = frames[-1][: expected.shape[0], : expected.shape[1]]
    assert np.abs(got.astype(float) - expected).mean() < 6
    # word 2 ("apple") is a blob at x ≈ 5/6 of the width, y ≈ 1/4 of the height
    th, tw = style.tile
    y, x = int(th * 0.25), int(tw * 5 / 6)
    far_y, far_x = int(th * 0.8), int(tw * 0.1)
    heat_gain = expected[y, x].astype(int).sum() - np.asarray(Image.fromarray(last.preview).resize((tw, th)))[y, x].astype(int).sum()
    assert abs(heat_gain) > 60
    assert np.abs(expected[far_y, far_x].astype(int) - np.asarray(Image.fromarray(last.preview).resize((tw, th), Image.LANCZOS))[far_y, far_x]).max() <= 3


def test_grid_and_side_layouts_tile_the_words(run):
    rec = load_recording(run)
    frame = rec.frame(0)
    words = ((0, "a"), (1, "red"), (2, "apple"))
    style = Style((40, 60), words)
    assert make_layout("grid", rec.start, style).render(frame).shape == (80, 120, 3)  # 2 × 2 grid for 3 words
    assert make_layout("side", rec.start, style).render(frame).shape == (40, 240, 3)  # preview + 3 overlays


def test_gif_with_grid_layout(run, tmp_path):
    summary = render_timelapse(run, tmp_path / "c.gif", TimelapseOptions(layout="grid", size=64, fps=5, hold=0.4), progress=False)
    gif = Image.open(tmp_path / "c.gif")
    assert summary["frames"] == 6 + 2
    durations = []
    for k in range(gif.n_frames):  # Pillow merges the identical hold frames into one longer frame
        gif.seek(k)
        durations.append(gif.info["duration"])
    assert sum(durations) == 8 * 200 and durations[0] == 200 and gif.info["loop"] == 0
    assert summary["words"] == ["a", "red", "apple"]


def test_particles_layout_runs_the_reference_law(run):
    """The layout's particles are exactly bridge.particles driven by the cumulative map and phase weights."""
    rec = load_recording(run)
    style = Style((32, 48), ((1, "red"),), map_kind="cumulative")
    layout = make_layout("particles", rec.start, style, particles=500, frames_per_step=2, fps=10)
    params = law.ParticleParams(count=500)
    state = law.init_particles(500, seed=0, scatter=True)
    for i in range(3):
        frame = rec.frame(i)
        layout.sequence(frame)
        a = law.word_attention(frame.cumulative, 1)
        w = law.phase_weight(frame.phase_weights, params.phase_gain)
        state = law.advance(state, a, w, params, updates=2 * 6)  # 2 frames × round(60 / 10) updates
    np.testing.assert_array_equal(layout.state.pos, state.pos)
    np.testing.assert_array_equal(layout.state.vel, state.vel)


def test_particles_video_has_frames_per_step(run, tmp_path):
    opts = TimelapseOptions(layout="particles", size=64, fps=12, hold=0.25, frames_per_step=2)
    summary = render_timelapse(run, tmp_path / "p.mp4", opts, progress=False)
    assert len(video_frames(tmp_path / "p.mp4")) == summary["frames"] == 6 * 2 + 3


def test_truncated_recording_renders_to_its_last_step_with_a_notice(tmp_path, caplog):
    rec = killed_recording(tmp_path / "run", kill_after_step=4)
    summary = render_timelapse(rec, tmp_path / "t.mp4", TimelapseOptions(layout="single", size=48, fps=10, hold=0.2),
                               progress=False)
    assert summary["truncated"] and summary["steps"] == 5
    assert len(video_frames(tmp_path / "t.mp4")) == 5 + 2
    assert "truncated" in caplog.text and "5 completed steps of 10" in caplog.text


def test_cli_writes_video_and_logs_a_summary(run, tmp_path, caplog):
    caplog.set_level("INFO")
    assert main(["timelapse", str(run), "-o", str(tmp_path / "sub" / "v.mp4"), "--size", "64", "--no-progress",
                 "--layout", "side", "--words", "red,2"]) == 0
    assert (tmp_path / "sub" / "v.mp4").stat().st_size > 1000
    assert "words: red, apple" in caplog.text


def test_with_no_options_the_timelapse_is_the_particle_morph_of_the_focus_word(run, tmp_path, caplog):
    """What `timelapse RUN -o OUT` gives: the morph, six frames a step and a 4 s hold to settle."""
    caplog.set_level("INFO")
    assert main(["timelapse", str(run), "-o", str(tmp_path / "v.mp4"), "--size", "48", "--no-progress"]) == 0
    steps = len(load_recording(run))
    assert len(video_frames(tmp_path / "v.mp4")) == steps * 6 + 4 * 8
    assert "words: red" in caplog.text  # the focus word (run_start.focus), not "a"


@pytest.mark.parametrize("args, message", [
    (["-o", "x.avi"], "the output must end in .mp4 or .gif"),
    (["-o", "x.mp4", "--words", "zebra"], "word 'zebra' is not in this run; its words are: a red apple"),
    (["-o", "x.mp4", "--words", "42"], "word index 42 is out of range: this run has 3 words (0..2: a red apple)"),
    (["-o", "x.mp4", "--opacity", "2"], "opacity must be within 0..1"),
    (["-o", "x.mp4", "--fps", "0"], "fps must be within 0.1..120"),
])
def test_cli_bad_options_get_one_line(run, tmp_path, capsys, args, message):
    args = [a if not a.startswith("x.") else str(tmp_path / a) for a in args]
    assert main(["timelapse", str(run), "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_cli_corrupt_manifest_gets_one_clear_error(tmp_path, capsys):
    (tmp_path / "manifest.json").write_text("{not json")
    assert main(["timelapse", str(tmp_path), "-o", str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path / 'manifest.json'} is unreadable or corrupt") and "\n" not in err


def test_timelapse_of_a_real_engine_run(tiny_engine, tmp_path_factory, tmp_path):
    from replay_recordings import engine_recording

    rec = engine_recording(tmp_path_factory, tiny_engine)
    for layout in ("single", "grid"):
        out = tmp_path / f"{layout}.mp4"
        assert main(["timelapse", str(rec), "-o", str(out), "--layout", layout, "--size", "96", "--fps", "10",
                     "--hold", "0.2", "--no-progress"]) == 0
        assert len(video_frames(out)) == 6 + 2


def test_default_words_follow_attention_mass_and_skip_punctuation():
    from bridge.frames import RunStart
    from bridge.timelapse import choose_words

    start = RunStart("r", "a cat , hat", "", 0, 2, 7.5, 64, 64, (8, 8), ("a", "cat", ",", "hat"), ((1,), (2,), (3,), (4,)),
                     (), "m", "s")
    mass = np.array([[0.1, 0.3, 0.4, 0.2], [0.1, 0.3, 0.4, 0.2]])
    assert choose_words(start, (), "single", mass) == ((1, "cat"),)
    assert choose_words(start, (), "side", mass) == ((1, "cat"), (3, "hat"))
    assert choose_words(start, (), "grid", mass) == ((0, "a"), (1, "cat"), (2, ","), (3, "hat"))
    assert choose_words(start, ("HAT", "0"), "grid", mass) == ((3, "hat"), (0, "a"))


def test_single_side_and_particles_start_on_the_focus_word_as_the_viewer_does():
    """"a" soaks up the most attention, yet the timelapse shows "star" — the word the bridge
    sends as run_start.focus, the viewer and TouchDesigner start on."""
    from bridge import protocol as P
    from bridge.frames import RunStart
    from bridge.timelapse import choose_words

    words = ("a", "yellow", "star", "and", "a", "green", "circle")
    start = RunStart("r", " ".join(words), "", 0, 2, 7.5, 64, 64, (8, 8), words, tuple((i + 1,) for i in range(7)),
                     (), "m", "s")
    mass = np.array([[0.5, 0.05, 0.1, 0.05, 0.1, 0.05, 0.15]] * 2)
    focus = P.run_start_message(start)["focus"]
    assert words[focus] == "star"
    assert choose_words(start, (), "single", mass) == ((2, "star"),)
    assert choose_words(start, (), "particles", mass) == ((2, "star"),)
    assert choose_words(start, (), "side", mass) == ((2, "star"), (6, "circle"))  # never "a"


def test_a_timelapse_of_a_self_attention_region(tiny_engine, tmp_path, capsys):
    """`--map self` draws a recorded region's self-attention over the preview; a step without
    the region (regions change mid-run) shows the bare preview, and a run without regions says so."""
    from bridge.bus import Bus
    from bridge.engine import GenerationRequest
    from bridge.recording import Recorder
    from bridge.regions import from_text

    frames_done = []

    def regions():  # the box from the second step on, as a VJ would drag it mid-run
        return (from_text("box:8,8,40,40"),) if len(frames_done) else ()

    class Count:
        def on_step(self, frame):
            frames_done.append(frame.step)

    folder = tmp_path / "self-run"
    rec = Recorder(folder)
    tiny_engine.generate(GenerationRequest("a red apple", steps=4), Bus([Count(), rec]), regions=regions)
    rec.close()
    out = tmp_path / "self.mp4"
    assert main(["timelapse", str(folder), "-o", str(out), "--map", "self", "--layout", "side", "--size", "96",
                 "--no-progress", "--hold", "0"]) == 0
    video = video_frames(out)
    assert len(video) == 4
    tile = slice(30, 90)  # inside the 96-pixel tiles, below their labels (caption and timeline follow)
    right = [f[tile, f.shape[1] // 2:].astype(int) for f in video]  # the region's tile
    left = [f[tile, : f.shape[1] // 2].astype(int) for f in video]  # the bare preview
    assert np.abs(right[0] - left[0]).mean() < 3  # step 0 had no region: no heat over it
    assert np.abs(right[-1] - left[-1]).mean() > 10  # later steps: the box's map over the preview
    # The box is outlined in white over its map (exact pixels: the layout, not the lossy video).
    from bridge.recording.reader import Recording
    from bridge.timelapse.overlays import Single
    from bridge.timelapse.style import Style

    recorded = Recording(folder)
    scale = 96 / recorded.start.width
    style = Style((96, 96), ((0, "r0"),), map_kind="self", region_ids=("r0",), image_hw=(recorded.start.height, recorded.start.width))
    edge = (slice(round(8 * scale) - 1, round(40 * scale) + 2), round(8 * scale))  # the box's left side
    first, last = (Single(recorded.start, style).overlay(recorded.frame(i), np.zeros((96, 96, 3), np.uint8), 0) for i in (0, 3))
    assert (last[edge] == 255).all(axis=-1).mean() > 0.8 and not (first == 255).all(axis=-1).any()
    assert main(["timelapse", str(folder), "-o", str(out), "--map", "self", "--words", "nope", "--no-progress"]) == 2
    assert "region 'nope' is not in this run; its regions are: r0" in capsys.readouterr().err


def test_a_self_timelapse_of_a_run_without_regions_says_how_to_get_one(run, tmp_path, capsys):
    assert main(["timelapse", str(run), "-o", str(tmp_path / "x.mp4"), "--map", "self", "--no-progress"]) == 2
    assert "has no self-attention maps; record one with --region" in capsys.readouterr().err
