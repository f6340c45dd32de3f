"""Wire protocol v1: binary frames, JSON messages, subscriptions, and the decoders in the doc."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from bridge import protocol as P
from bridge.frames import RunEnd, RunStart, StepFrame
from bridge.phases import PhaseSchedule

DOC = Path(__file__).resolve().parents[1] / "docs" / "PROTOCOL.md"


def make_step(words=("a", "red", "apple"), step=2, total=5, h=8, w=6, run_id="run-1"):
    rng = np.random.default_rng(0)
    maps = (rng.random((len(words), h, w)) * 3).astype(np.float16)
    return StepFrame(run_id=run_id, step=step, total=total, timestep=500.0, phase="structure",
                     phase_weights=(0.0, 1.0, 0.0), words=tuple(words), maps=maps, cumulative=maps * 2,
                     mass=tuple([1 / len(words)] * len(words)), preview=rng.integers(0, 255, (16, 12, 3), dtype=np.uint8),
                     elapsed=0.5)


def test_header_is_36_bytes_little_endian():
    assert P.HEADER_SIZE == 36
    data = P.encode_frame(P.MAPS, np.zeros((2, 3, 4), np.float32), run=0xDEADBEEF, step=7, total=9, first_word=3)
    assert data[:4] == b"DAAM" and data[4] == 1 and data[5] == P.MAPS and data[6] == P.FLOAT32
    assert int.from_bytes(data[8:12], "little") == 0xDEADBEEF
    assert int.from_bytes(data[20:24], "little") == 3
    assert [int.from_bytes(data[o:o + 4], "little") for o in (24, 28, 32)] == [2, 3, 4]
    assert len(data) == 36 + 2 * 3 * 4 * 4


@pytest.mark.parametrize("dtype", [np.uint8, np.float16, np.float32])
def test_round_trip_every_dtype(dtype):
    a = (np.random.default_rng(1).random((4, 5, 7)) * 200).astype(dtype)
    f = P.decode_frame(P.encode_frame(P.CUMULATIVE, a, run=1, step=2, total=3, first_word=1))
    assert f.type_name == "cumulative" and (f.run, f.step, f.total, f.first_word) == (1, 2, 3, 1)
    assert f.data.dtype == a.dtype and np.array_equal(f.data, a)


def test_image_shape_is_h_w_3():
    img = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    f = P.decode_frame(P.encode_frame(P.PREVIEW, img, run=1, step=0, total=1))
    assert f.data.shape == (4, 5, 3) and np.array_equal(f.data, img)


def test_uint8_maps_are_normalised_per_word():
    maps = np.stack([np.full((2, 2), 0.5), np.array([[0, 1], [2, 4]]), np.zeros((2, 2))]).astype(np.float16)
    u = P.convert_maps(maps, P.UINT8)
    assert u.dtype == np.uint8
    assert (u[0] == 255).all()
    assert u[1].tolist() == [[0, 64], [128, 255]]
    assert (u[2] == 0).all()  # an all-zero map stays zero, no division by zero
    assert np.array_equal(P.convert_maps(maps, P.FLOAT16), maps)


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b[:10], "shorter than"),
    (lambda b: b"XXXX" + b[4:], "bad magic"),
    (lambda b: b[:4] + b"\x02" + b[5:], "version 2"),
    (lambda b: b[:6] + b"\x09" + b[7:], "dtype code 9"),
    (lambda b: b[:-1], "payload is"),
    (lambda b: b + b"\0", "payload is"),
])
def test_malformed_frames_raise_protocol_error(mutate, message):
    good = P.encode_frame(P.MAPS, np.zeros((1, 2, 2), np.uint8), run=1, step=0, total=1)
    with pytest.raises(P.ProtocolError, match=message):
        P.decode_frame(mutate(good))


def test_encode_refuses_unsupported_arrays():
    with pytest.raises(P.ProtocolError, match="int64"):
        P.encode_frame(P.MAPS, np.zeros((1, 2, 2), np.int64), run=0, step=0, total=1)
    with pytest.raises(P.ProtocolError, match="at most 3"):
        P.encode_frame(P.MAPS, np.zeros((1, 1, 2, 2), np.uint8), run=0, step=0, total=1)


def test_run_code_is_crc32_of_run_id():
    assert P.run_code("20261123-abc") == zlib.crc32(b"20261123-abc")


def test_json_messages_are_strict_json_and_carry_types():
    start = RunStart(run_id="r", prompt="a cat", negative_prompt="", seed=3, steps=4, guidance=float("nan"),
                     width=64, height=48, map_size=(8, 6), words=("a", "cat"), word_token_indices=((1,), (2,)),
                     dropped_words=(), model="builtin:tiny", scheduler="DDIM", phases=PhaseSchedule())
    msgs = [P.run_start_message(start), P.step_message(make_step(), stats=[{"mass": 0.5}]),
            P.run_end_message(RunEnd("r", "completed", 4, 1.0)), P.error_message("invalid_value", "no"),
            P.status_message(state="idle")]
    for m in msgs:
        text = P.encode_json(m)  # allow_nan=False: would raise on NaN
        back = P.decode_json(text)
        assert back["type"] in P.JSON_TYPES and back == json.loads(text)
    assert P.decode_json(P.encode_json(msgs[0]))["guidance"] is None
    assert msgs[0]["run"] == P.run_code("r") and msgs[0]["map_size"] == [8, 6]


@pytest.mark.parametrize("text", ["", "nope", "[1,2]", '{"x":1}', '{"type":3}', b"\xff\xfe"])
def test_decode_json_rejects_non_messages(text):
    with pytest.raises(P.ProtocolError):
        P.decode_json(text)


def test_subscription_validation_names_the_field():
    s = P.Subscription.from_dict({"frames": ["maps"], "words": "selected", "dtype": "float16", "meta": False})
    assert s == P.Subscription(("maps",), "selected", "float16", False)
    assert P.Subscription.from_dict({"frames": "maps,preview"}).frames == ("maps", "preview")
    assert P.Subscription.from_dict({"dtype": "float32"}, base=s).frames == ("maps",)  # keeps base
    for bad, field in [({"frames": ["heat"]}, "frames"), ({"words": -1}, "words"), ({"words": True}, "words"),
                       ({"dtype": "int8"}, "dtype"), ({"meta": 1}, "meta"), ({"colour": 1}, "colour")]:
        with pytest.raises(P.ProtocolError, match=field):
            P.Subscription.from_dict(bad)


def test_encoder_selected_word_gives_one_texture_per_step():
    frame = make_step()
    enc = P.FrameEncoder()
    sub = P.Subscription(("maps",), "selected", "uint8", False)
    out = enc.step_frames(frame, sub, selected=2)
    assert len(out) == 1
    f = P.decode_frame(out[0])
    assert f.first_word == 2 and f.data.shape == (1, 8, 6)
    assert np.array_equal(f.data[0], P.convert_maps(frame.maps, P.UINT8)[2])
    # out-of-range selection: nothing rather than a wrong word
    assert enc.step_frames(frame, sub, selected=5) == []


def test_encoder_all_frames_order_and_memoisation():
    frame = make_step()
    enc = P.FrameEncoder()
    sub = P.Subscription()
    a = enc.step_frames(frame, sub)
    b = enc.step_frames(frame, sub)
    assert [P.decode_frame(x).type_name for x in a] == ["maps", "cumulative", "preview"]
    assert all(x is y for x, y in zip(a, b))  # encoded once per event, shared by clients
    f32 = P.decode_frame(enc.step_frames(frame, P.Subscription(("cumulative",), "all", "float32"))[0])
    assert np.array_equal(f32.data, frame.cumulative.astype(np.float32))
    end = RunEnd("run-1", "completed", 5, 1.0, image=frame.preview)
    fin = P.decode_frame(enc.final_frame(end, 5, sub))
    assert fin.type_name == "final" and fin.step == 5 and np.array_equal(fin.data, frame.preview)
    assert enc.final_frame(RunEnd("run-1", "cancelled", 2, 1.0), 5, sub) is None


def _doc_block(lang: str) -> str:
    match = re.search(rf"```{lang}\n(.*?)```", DOC.read_text(), re.S)
    assert match, f"no {lang} block in PROTOCOL.md"
    return match.group(1)


def test_python_decoder_in_the_doc_works():
    ns: dict = {}
    exec(_doc_block("python"), ns)
    frame = make_step()
    for data in P.FrameEncoder().step_frames(frame, P.Subscription(dtype="float32")):
        ours, theirs = P.decode_frame(data), ns["decode"](data)
        assert theirs["type"] == ours.type_name and theirs["step"] == 2 and theirs["first_word"] == 0
        assert np.array_equal(theirs["data"], ours.data)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_javascript_decoder_in_the_doc_works(tmp_path):
    maps = (np.arange(2 * 3 * 4, dtype=np.float32) / 7).reshape(2, 3, 4)
    frame = P.encode_frame(P.MAPS, maps, run=P.run_code("js"), step=3, total=10, first_word=1)
    (tmp_path / "frame.bin").write_bytes(frame)
    script = _doc_block("js") + """
const fs = require("fs");
const b = fs.readFileSync(process.argv[2]);
const buf = b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
const f = decodeFrame(buf);
console.log(JSON.stringify({type: f.type, dtype: f.dtype, run: f.run, step: f.step, total: f.total,
  firstWord: f.firstWord, shape: f.shape, data: Array.from(f.data)}));
"""
    (tmp_path / "decode.js").write_text(script)
    out = json.loads(subprocess.run(["node", str(tmp_path / "decode.js"), str(tmp_path / "frame.bin")],
                                    capture_output=True, text=True, check=True).stdout)
    assert (out["type"], out["dtype"], out["run"], out["step"], out["total"], out["firstWord"]) == \
        (P.MAPS, P.FLOAT32, P.run_code("js"), 3, 10, 1)
    assert out["shape"] == [2, 3, 4]
    assert np.allclose(out["data"], maps.ravel(), rtol=0, atol=0)
    assert not any(math.isnan(x) for x in out["data"])


def test_the_self_grid_goes_only_to_clients_that_subscribe_to_it():
    import dataclasses

    frame = make_step()
    grid = np.random.default_rng(1).random((16, 4, 4)).astype(np.float16)
    frame = dataclasses.replace(frame, kinds={**frame.kinds, "selfgrid": grid})
    enc = P.FrameEncoder()
    default = P.Subscription()
    assert "selfgrid" not in default.frames and {"maps", "cumulative", "preview"} <= set(default.frames)
    assert all(P.decode_frame(b).type != 6 for b in enc.step_frames(frame, default))
    sub = P.Subscription.from_dict({"frames": ["selfgrid"]})
    (only,) = enc.step_frames(frame, sub)
    f = P.decode_frame(only)
    assert f.type == 6 and f.data.shape == (16, 4, 4)
