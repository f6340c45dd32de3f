"""One heat ramp and one set of word colours (bridge/palette.py) on every screen: the viewer,
TouchDesigner and the timelapse / export pictures."""

from __future__ import annotations

import numpy as np

from bridge import palette
from bridge.timelapse import colormaps
from tests._browser import WEB, browser_page, static_server


def test_the_viewers_palette_module_is_written_from_the_python_one():
    assert (WEB / "palette.js").read_text(encoding="utf-8") == palette.web_module(), \
        "web/palette.js is stale: run `python -m bridge.palette`"


def test_timelapse_and_export_draw_with_the_same_ramp_and_word_colours():
    ramp = colormaps.lut("inferno")
    assert tuple(map(tuple, ramp[[0, -1]])) == (palette.HEAT[0], palette.HEAT[-1])
    assert colormaps.word_color(3) == palette.WORDS[3]


def test_the_viewer_draws_the_same_256_levels_as_the_timelapse():
    with static_server() as base, browser_page() as page:
        page.goto(f"{base}/index.html?ws=ws://127.0.0.1:9/")  # no bridge needed: only the module's table
        lut = page.evaluate("async () => Array.from((await import('/views.js')).LUT)")
        word = page.evaluate("async () => (await import('/views.js')).wordColor(13)")
        page.wait_for_function("document.getElementById('legend-ramp').getContext('2d').getImageData(159, 5, 1, 1).data[0] > 0")
        ends = page.evaluate("""() => { const c = document.getElementById('legend-ramp').getContext('2d');
            return [Array.from(c.getImageData(0, 5, 1, 1).data.slice(0, 3)), Array.from(c.getImageData(159, 5, 1, 1).data.slice(0, 3))]; }""")
    js = np.array(lut, np.int64).reshape(256, 3)
    assert np.abs(js - colormaps.lut("inferno").astype(np.int64)).max() <= 1  # rounding only
    assert [tuple(e) for e in ends] == [palette.HEAT[0], palette.HEAT[-1]]  # the legend: no attention → peak
    r, g, b = palette.WORDS[13 % len(palette.WORDS)]
    assert word == f"rgba({r}, {g}, {b}, 1)"


def test_touchdesigner_builds_its_heat_ramp_from_the_palette(monkeypatch):
    from tests.test_limits import _build_touchdesigner_network

    comp = _build_touchdesigner_network(monkeypatch)
    rows = comp.op("heat_ramp_keys").rows
    assert [tuple(round(v * 255) for v in row[1:4]) for row in rows[1:]] == list(palette.HEAT)
    assert [row[0] for row in rows[1:]] == [p for p, _ in palette.heat_stops()]
