"""Map kinds are data (bridge/mapkinds.py): every consumer reads the one table.

The toy-kind test is the proof: one row added in the test plus its producer, and the kind is
recorded, read back, and sent over a real websocket by replay — with no other code changed.
"""

from __future__ import annotations

import json
import threading

import numpy as np
from PIL import Image

from _live import WsClient, is_json
from bridge import mapkinds
from bridge import protocol as P
from bridge.commands.replay import ReplaySession
from bridge.frames import StepFrame
from bridge.presets import defaults
from bridge.recording import Recorder, load_recording
from replay_recordings import synthetic_frames, synthetic_recording


def test_the_table_is_consistent():
    rows = mapkinds.kinds()
    codes = [k.code for k in rows]
    assert len(set(codes)) == len(codes) and not set(codes) & set(P.IMAGE_TYPES.values())
    assert len({k.folder for k in rows}) == len(rows) and "previews" not in {k.folder for k in rows}
    assert all(k.normalization in mapkinds.NORMALIZERS for k in rows)
    assert list(P.frame_types()) == [k.name for k in rows] + ["preview", "final"]


def test_a_new_kind_is_one_row_plus_its_producer(tmp_path, monkeypatch):
    toy = mapkinds.MapKind("toy", 9, "toy", labels="regions", description="made up: the words' peak, one region")
    monkeypatch.setitem(mapkinds.KINDS, "toy", toy)
    start, frames, end = synthetic_frames(steps=4, step_seconds=0.01)
    # The producer: one more array in each record.
    frames = [StepFrame(f.run_id, f.step, f.total, f.timestep, f.phase, f.phase_weights, f.words, mass=f.mass,
                          preview=f.preview, elapsed=f.elapsed, timings=f.timings,
                          kinds={**f.kinds, "toy": f.maps.max(axis=0, keepdims=True)}) for f in frames]

    folder = tmp_path / "runs" / "toy-run"
    rec = Recorder(folder)
    for event in (start, *frames):
        (rec.on_run_start if event is start else rec.on_step)(event)
    rec.on_run_end(end)
    assert rec.ok, rec.error
    assert sorted(p.name for p in (folder / "toy").iterdir()) == [f"{s:06d}.npy" for s in range(4)]
    lines = [json.loads(line) for line in (folder / "steps.jsonl").read_text().splitlines()]
    assert [line["kinds"] for line in lines] == [["maps", "cumulative", "toy"]] * 4
    back = load_recording(folder)
    assert [list(f.kinds) for f in back.frames()] == [["maps", "cumulative", "toy"]] * 4
    np.testing.assert_array_equal(back.frame(3).kinds["toy"], frames[3].kinds["toy"])

    values = defaults()
    values.update(recordings=str(folder.parent), port=0, osc_in_port=0, osc_out=[], web_root="web", loop=False,
                  shuffle=False, speed=1.0)
    session = ReplaySession(values, gap=0, progress=False, paused=True).start()
    player = threading.Thread(target=session.play, daemon=True)
    player.start()
    ws = WsClient(session.sinks.websocket.url)
    try:
        hello = ws.until(is_json("hello"))
        assert {"name": "toy", "code": 9, "labels": "regions"}.items() <= hello["map_kinds"][-1].items()
        ws.send({"type": "subscribe", "frames": ["toy", "maps"], "words": 1, "dtype": "float16"})
        ws.until(lambda m: is_json("status")(m) and m["subscription"]["frames"] == ["toy", "maps"])
        ws.send({"type": "resume"})
        ws.until(is_json("run_end"), 20)
    finally:
        ws.close()
        session.player.stop()
        player.join(5)
        session.close()
    sent = ws.frames("toy")
    assert [f.step for f in sent] == [0, 1, 2, 3] and all(f.type == 9 and f.first_word == 0 for f in sent)
    np.testing.assert_array_equal(sent[-1].data, frames[3].kinds["toy"])  # regions: not sliced by word
    assert [f.data.shape[0] for f in ws.frames("maps")] == [1] * 4  # words: the subscribed word only

    monkeypatch.delitem(mapkinds.KINDS, "toy")  # a bridge without the row still reads the recording
    assert [list(f.kinds) for f in load_recording(folder).frames()] == [["maps", "cumulative"]] * 4


def test_a_new_word_kind_is_offered_to_timelapse(tmp_path, monkeypatch):
    from bridge.cli import main

    monkeypatch.setitem(mapkinds.KINDS, "halo", mapkinds.MapKind("halo", 10, "halo", description="made up: maps²"))
    start, frames, end = synthetic_frames(steps=3)
    rec = Recorder(tmp_path / "run")
    rec.on_run_start(start)
    for f in frames:
        rec.on_step(StepFrame(f.run_id, f.step, f.total, f.timestep, f.phase, f.phase_weights, f.words, mass=f.mass,
                              preview=f.preview, elapsed=f.elapsed, kinds={**f.kinds, "halo": f.maps ** 2}))
    rec.on_run_end(end)
    out = tmp_path / "halo.gif"
    assert main(["timelapse", str(tmp_path / "run"), "-o", str(out), "--map", "halo", "--fps", "5", "--hold", "0",
                 "--no-progress"]) == 0
    assert out.stat().st_size > 0


def test_version_1_recordings_are_unchanged_and_one_laid_out_by_hand_reads(tmp_path):
    """The two word kinds are recorded exactly as before the table (no "kinds" field), and a
    recording written with json and numpy alone, as docs/RECORDING.md lays it out, replays."""
    from bridge.recording.writer import manifest_from_start

    made = synthetic_recording(tmp_path / "made", steps=3)
    assert all("kinds" not in json.loads(line) for line in (made / "steps.jsonl").read_text().splitlines())
    # (".hold" is the retention lock, not part of the format: docs/RECORDING.md)
    assert sorted(p.name for p in made.iterdir() if p.name != ".hold") == ["cumulative", "daam.npy", "final.png", "manifest.json", "maps",
                                                      "previews", "steps.jsonl"]

    start, frames, end = synthetic_frames(steps=3)
    old = tmp_path / "old"
    for sub in ("maps", "cumulative", "previews"):
        (old / sub).mkdir(parents=True)
    manifest = {**manifest_from_start(start), "status": "completed", "steps_done": 3, "elapsed": end.elapsed}
    (old / "manifest.json").write_text(json.dumps(manifest))
    with open(old / "steps.jsonl", "w") as index:
        for f in frames:
            np.save(old / "maps" / f"{f.step:06d}.npy", f.maps)
            np.save(old / "cumulative" / f"{f.step:06d}.npy", f.cumulative)
            Image.fromarray(f.preview).save(old / "previews" / f"{f.step:06d}.png")
            index.write(json.dumps({"step": f.step, "total": f.total, "timestep": f.timestep, "phase": f.phase,
                                    "phase_weights": list(f.phase_weights), "mass": list(f.mass),
                                    "elapsed": f.elapsed, "timings": f.timings}) + "\n")
    back = load_recording(old)
    assert not back.truncated and len(back) == 3
    for f, sent in zip(back.frames(), frames):
        assert list(f.kinds) == ["maps", "cumulative"]
        assert f.maps.tobytes() == sent.maps.tobytes() and f.cumulative.tobytes() == sent.cumulative.tobytes()
    assert back.daam().tobytes() == frames[-1].cumulative.tobytes()  # no daam.npy: the last cumulative map
