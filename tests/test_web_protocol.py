"""web/protocol.js decodes what bridge/protocol.py encodes, in every dtype (real Chromium)."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from bridge import protocol as P
from bridge.frames import normalize_maps
from tests._browser import browser_page, static_server

DECODE_JS = """
async (frames) => {
  const { decodeFrame, mapsToUnit } = await import('/protocol.js');
  return frames.map((b64) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    try {
      const f = decodeFrame(bytes.buffer);
      const out = { type: f.type, dtype: f.dtype, run: f.run, step: f.step, total: f.total, firstWord: f.firstWord, shape: f.shape };
      if (f.type <= 2) out.unit = mapsToUnit(f).maps.map((m) => Array.from(m));
      else out.bytes = Array.from(f.data);
      return out;
    } catch (err) {
      return { error: String(err.message) };
    }
  });
}
"""


@pytest.fixture(scope="module")
def page():
    with static_server() as base, browser_page() as page:
        page.goto(base + "/__test__")
        yield page


def b64(frame: bytes) -> str:
    return base64.b64encode(frame).decode()


def test_maps_in_every_dtype_decode_to_the_same_unit_maps(page):
    rng = np.random.default_rng(3)
    maps = (rng.random((3, 5, 7)) * np.array([2.0, 0.01, 0.0])[:, None, None]).astype(np.float16)  # one all-zero word
    run = P.run_code("20261123-0101-abc")
    frames = [P.encode_frame(P.MAPS, P.convert_maps(maps[1:], code), run=run, step=4, total=9, first_word=1)
              for code in (P.UINT8, P.FLOAT16, P.FLOAT32)]
    results = page.evaluate(DECODE_JS, [b64(f) for f in frames])
    expected = normalize_maps(maps[1:])
    for result, tolerance in zip(results, (0.5 / 255 + 1e-6, 1e-3, 1e-6)):
        assert "error" not in result, result
        assert result["shape"] == [2, 5, 7] and result["firstWord"] == 1
        assert (result["run"], result["step"], result["total"]) == (run, 4, 9)
        unit = np.asarray(result["unit"], np.float32).reshape(2, 5, 7)
        np.testing.assert_allclose(unit, expected, atol=tolerance)
        assert not unit[1].any()  # an all-zero map stays zero


def test_images_decode_byte_for_byte_and_bad_frames_are_refused_with_a_reason(page):
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    good = P.encode_frame(P.PREVIEW, image, run=7, step=2, total=3)
    results = page.evaluate(DECODE_JS, [b64(good), b64(good[:20]), b64(b"XXXX" + good[4:]), b64(good[:-5])])
    assert results[0]["type"] == P.PREVIEW and results[0]["shape"] == [6, 9, 3]
    assert bytes(results[0]["bytes"]) == image.tobytes()
    assert "too short" in results[1]["error"]
    assert "not a DAAM v1 frame" in results[2]["error"]
    assert "shorter than its shape" in results[3]["error"]


def test_the_viewers_map_kinds_are_the_bridges_table_and_hello_extends_them(page):
    from bridge import mapkinds

    toy = {"name": "toy", "code": 9, "labels": "regions", "normalization": "peak"}
    mirror, learned = page.evaluate("""async (hello) => {
      const { MAP_KINDS, kindTable } = await import('/protocol.js');
      return [MAP_KINDS, kindTable(hello).get(9)];
    }""", [*mapkinds.describe(), toy])
    assert mirror == [{k: d[k] for k in ("name", "code", "labels", "normalization")} for d in mapkinds.describe()]
    assert learned == toy
