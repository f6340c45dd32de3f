"""Concept maps on the live bridge and in recordings: set by websocket, OSC, preset or command
line, changed mid-run, streamed as frame type 7 with their names, recorded and replayed,
refused in one sentence.  Real sockets on loopback, the tiny built-in model (OVAM concepts)."""

from __future__ import annotations

import numpy as np
import pytest
from pythonosc.udp_client import SimpleUDPClient

from bridge.cli import main
from bridge.control import ControlError, parse_json_control, parse_osc_control
from bridge.presets import PresetError, apply_overrides, defaults
from bridge.protocol import Frame
from bridge.recording import load_recording
from tests._live import answer, OscCollector, WsClient, greeted_client, is_json, live_session, wait_for


@pytest.fixture(scope="module")
def server(tiny_engine):
    with live_session(tiny_engine, steps=2) as session:
        yield session


@pytest.fixture
def client(server):
    with greeted_client(server) as c:
        yield c
        c.send({"type": "concepts", "concepts": []})  # the next test starts without concepts


def test_concept_controls_parse_from_json_and_osc():
    assert parse_json_control({"type": "concepts", "concepts": ["sky", " circle "]}).values == {"concepts": ("sky", "circle")}
    assert parse_json_control({"type": "concepts", "concepts": "sky, circle"}).values == {"concepts": ("sky", "circle")}
    assert parse_json_control({"type": "concepts", "concepts": []}).values == {"concepts": ()}
    assert parse_osc_control("/daam/concepts", ["sky,circle", "background"]).values == {"concepts": ("sky", "circle", "background")}
    assert parse_osc_control("/daam/concepts", []).values == {"concepts": ()}
    with pytest.raises(ControlError, match="takes concept names as text"):
        parse_osc_control("/daam/concepts", [3])
    with pytest.raises(ControlError, match='needs a "concepts" list'):
        parse_json_control({"type": "concepts"})


def test_concepts_set_over_the_websocket_stream_one_map_each_per_step(server, client):
    reply = answer(client, {"type": "concepts", "concepts": ["square", "background"]}, 1)
    assert reply["type"] == "status" and reply["concepts"] == ["square", "background"]
    client.send({"type": "prompt", "prompt": "a red square"})
    end = client.until(is_json("run_end"), 120)
    assert end["status"] == "completed"
    run = [m for m in client.received if isinstance(m, Frame) and m.type == 7 and m.run == end["run"]]
    assert [f.step for f in run] == [0, 1] and all(f.data.shape[0] == 2 and f.type_name == "concepts" for f in run)
    steps = [m for m in client.json("step") if m["run_id"] == end["run_id"]]
    assert all(m["concepts"] == ["square", "background"] for m in steps)


@pytest.mark.parametrize("concepts, words", [
    ([f"c{i}" for i in range(17)], "at most 16 concepts"),
    (["sky", "sky"], "each concept once"),
    ([["nested"]], "list of words"),
    ({"a": 1}, "list of words"),
])
def test_bad_concepts_are_refused_in_one_sentence_and_change_nothing(server, client, concepts, words):
    before = server.concepts
    reply = answer(client, {"type": "concepts", "concepts": concepts}, 2)
    assert reply["type"] == "error" and words in reply["message"] and "\n" not in reply["message"], reply
    assert server.concepts == before


def test_osc_sets_and_clears_concepts_and_carries_their_statistics(tiny_engine):
    out = OscCollector()
    try:
        with live_session(tiny_engine, steps=2, osc_out=[out.target]) as s:
            osc = SimpleUDPClient("127.0.0.1", s.osc_in.port)
            osc.send_message("/daam/concepts", ["square, circle"])
            assert wait_for(lambda: s.concepts == ("square", "circle"), 10)
            c = WsClient(s.websocket.url)
            c.send({"type": "prompt", "prompt": "a red square"})
            assert out.wait_for(lambda m: sum(a == "/daam/concept/1" for a, _ in m) == 2, 60)
            c.close()
            osc.send_message("/daam/concepts", [])
            assert wait_for(lambda: s.concepts == (), 10)
        assert out.addresses("/daam/concepts") == [["square", "circle"]] * 2
        first, second = out.addresses("/daam/concept/0")
        mass = [out.addresses(f"/daam/concept/{i}")[0][0] for i in (0, 1)]
        assert abs(sum(mass) - 1) < 1e-5 and first[5] == 0 and second[5] > 0  # change from the second step on
    finally:
        out.close()


def test_a_concept_typed_during_the_run_appears_from_a_later_step_of_that_run(tiny_engine):
    with live_session(tiny_engine, steps=40) as session:
        c = WsClient(session.websocket.url)
        try:
            c.until(is_json("status"), 30)
            c.send({"type": "prompt", "prompt": "a red square"})
            first = c.until(is_json("step"), 60)
            assert "concepts" not in first
            c.send({"type": "concepts", "concepts": ["square", "sky"]})
            later = c.until(lambda m: isinstance(m, dict) and m.get("type") == "step" and m.get("concepts"), 120)
            assert later["run_id"] == first["run_id"] and later["step"] < 39 and later["concepts"] == ["square", "sky"]
            c.send({"type": "cancel"})
        finally:
            c.close()


def test_a_preset_or_flag_gives_concepts_and_bad_ones_name_the_key():
    values = apply_overrides(defaults(), type("Args", (), {"concepts": ["sky,circle"]})())
    assert values["concepts"] == ["sky,circle"]
    with pytest.raises(PresetError, match=r"\[generation\] concepts: each concept once"):
        apply_overrides(defaults(), type("Args", (), {"concepts": ["sky,sky"]})())


def test_render_records_concepts_and_replay_reads_them(tmp_path, capsys):
    out = tmp_path / "square"
    code = main(["render", "--model", "builtin:tiny", "--device", "cpu", "--no-progress", "--prompt", "a red square",
                 "--steps", "3", "--concepts", "square,circle", "--concepts", "background", "--out", str(out)])
    assert code == 0, capsys.readouterr()
    rec = load_recording(out)
    frames = list(rec.frames())
    assert all(f.concepts == ("square", "circle", "background") for f in frames)
    assert all(f.kinds["concepts"].shape == (3, *rec.start.map_size) for f in frames)
    assert rec.manifest["extra"]["concepts"] == ["square", "circle", "background"]
    assert np.isfinite(frames[-1].kinds["concepts"].astype(np.float32)).all()
    assert main(["render", "--model", "builtin:tiny", "--device", "cpu", "--no-progress", "--prompt", "x",
                 "--concepts", ",".join(f"c{i}" for i in range(17)), "--out", str(tmp_path / "no")]) == 2
    assert "at most 16 concepts" in capsys.readouterr().err


@pytest.fixture(scope="module")
def concept_run(tiny_engine, tmp_path_factory):
    """A recorded run whose concepts change mid-run: "square" alone for steps 0 and 1 (the change
    comes with step 0's frame, while step 1's concepts are already set), then "square, circle, background"."""
    from bridge.bus import Bus
    from bridge.engine import GenerationRequest
    from bridge.recording import Recorder

    done = []

    class Count:
        def on_step(self, frame):
            done.append(frame.step)

    folder = tmp_path_factory.mktemp("concepts") / "run"
    rec = Recorder(folder)
    tiny_engine.generate(GenerationRequest("a red square", steps=4), Bus([Count(), rec]),
                         concepts=lambda: ("square", "circle", "background") if done else ("square",))
    rec.close()
    return folder


def test_export_writes_each_concepts_average_the_segmentation_and_its_masks(concept_run, tmp_path):
    from PIL import Image

    from bridge.export import ExportOptions, concept_averages, export

    out = tmp_path / "export"
    result = export(concept_run, out, ExportOptions(what=("concepts",), size=128), progress=False)
    names = sorted(p.name for p in (out / "concepts").iterdir())
    assert names == ["00_square.png", "01_circle.png", "02_background.png", "curves.csv", "masks", "segments.json", "segments.png"]
    assert sorted(p.name for p in (out / "concepts" / "masks").iterdir()) == ["00_square.png", "01_circle.png", "02_background.png"]
    masks = np.stack([np.asarray(Image.open(out / "concepts" / "masks" / n)) for n in ("00_square.png", "01_circle.png", "02_background.png")])
    assert masks.shape == (3, 128, 128) and (masks.sum(0) == 255).all()  # the argmax: every pixel in exactly one
    segments = np.asarray(Image.open(out / "concepts" / "segments.png")).astype(int)
    assert segments.shape == (128, 128, 3)
    # the key names each segment's colour: the argmax picture is that colour over the image, 55 %
    import json

    from bridge.export import _final_image, _resized

    key = json.loads((out / "concepts" / "segments.json").read_text())["segments"]
    assert [k["concept"] for k in key] == ["square", "circle", "background"]
    assert [k["mask"] for k in key] == ["masks/00_square.png", "masks/01_circle.png", "masks/02_background.png"]
    image = _resized(_final_image(load_recording(concept_run)), 128).astype(float)  # what export drew on
    for k, m in zip(key, masks):
        rgb = np.array([int(k["colour"][i:i + 2], 16) for i in (1, 3, 5)], float)
        expect = 0.45 * image[m == 255] + 0.55 * rgb
        assert np.abs(segments[m == 255] - expect).max() <= 1.0
    lines = (out / "concepts" / "curves.csv").read_text().splitlines()
    assert lines[0] == "step,share_00_square,share_01_circle,share_02_background" and len(lines) == 5
    assert lines[1].endswith(",1.0000,,") and lines[2].endswith(",1.0000,,")
    assert all(abs(sum(map(float, ln.split(",")[1:])) - 1) < 1e-3 for ln in lines[3:])
    last, means, _ = concept_averages(load_recording(concept_run))
    assert last == ("square", "circle", "background") and set(result["files"]) == {"concepts"}
    rec = load_recording(concept_run)
    first_square = np.asarray(rec.map_array("concepts", 0), np.float32)[0]
    later_squares = [np.asarray(rec.map_array("concepts", i), np.float32)[0] for i in (1, 2, 3)]
    assert np.allclose(means["square"], (first_square + sum(later_squares)) / 4, atol=1e-3)  # over the steps that had it
    assert np.allclose(means["circle"], sum(np.asarray(rec.map_array("concepts", i), np.float32)[1] for i in (2, 3)) / 2, atol=1e-3)


def test_a_timelapse_of_concepts_aligns_them_by_name(concept_run, tmp_path, capsys):
    from test_timelapse import video_frames

    out = tmp_path / "concepts.mp4"
    assert main(["timelapse", str(concept_run), "-o", str(out), "--map", "concepts", "--words", "circle", "--layout", "side",
                 "--size", "96", "--no-progress", "--hold", "0"]) == 0
    video = video_frames(out)
    assert len(video) == 4
    tile = slice(30, 90)
    right = [f[tile, f.shape[1] // 2:].astype(int) for f in video]
    left = [f[tile, : f.shape[1] // 2].astype(int) for f in video]
    assert np.abs(right[0] - left[0]).mean() < 3 and np.abs(right[1] - left[1]).mean() < 3  # no "circle" yet: the bare preview
    assert np.abs(right[-1] - left[-1]).mean() > 10
    assert main(["timelapse", str(concept_run), "-o", str(out), "--map", "concepts", "--words", "sky", "--no-progress"]) == 2
    assert "concept 'sky' is not in this run; its concepts are: square circle background" in capsys.readouterr().err
