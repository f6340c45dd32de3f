"""web/views.js drawing functions on their own, in real Chromium (no bridge): the
attention-mass timeline with the steps a page missed."""

from __future__ import annotations

import numpy as np
import pytest

from tests._browser import browser_page, static_server

# Draw the timeline into a fresh canvas; returns {error} or the canvas's RGBA pixels.
DRAW_JS = """
async ({ steps, total, words }) => {
  const { drawTimeline } = await import('/views.js');
  const canvas = document.createElement('canvas');
  canvas.width = 400; canvas.height = 120;
  const mass = [];
  for (const [step, row] of steps) mass[step] = row;  // holes where a step never came
  try {
    drawTimeline(canvas, { mass, total, words, phases: { noise: 0.3, structure: 0.4, detail: 0.3 }, selected: 1 });
  } catch (err) {
    return { error: String(err) };
  }
  const px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  return { w: canvas.width, h: canvas.height, px: Array.from(px) };
}
"""


@pytest.fixture(scope="module")
def page():
    with static_server() as base, browser_page() as page:
        page.goto(base + "/__test__")
        yield page


def draw(page, steps, total=20, words=("a", "star", "circle")):
    out = page.evaluate(DRAW_JS, {"steps": [[s, list(r)] for s, r in steps], "total": total, "words": list(words)})
    assert "error" not in out, out["error"]
    return np.asarray(out["px"], np.uint8).reshape(out["h"], out["w"], 4)


def coloured_columns(px: np.ndarray) -> np.ndarray:
    """Columns holding a line (a saturated pixel; the background and phase shading are grey-blue)."""
    rgb = px[..., :3].astype(int)
    return (rgb.max(axis=2) - rgb.min(axis=2) > 60).any(axis=0)


def rows(steps):
    return [(s, (0.2, 0.5 + 0.01 * s, 0.3)) for s in steps]


@pytest.mark.parametrize("got", [range(7, 20), [0, 1, 2, 9, 10, 15, 19], [12]])
def test_missed_steps_leave_gaps_and_the_rest_is_drawn(page, got):
    px = draw(page, rows(got))
    cols = coloured_columns(px)
    x = lambda step: int(6 + (step + 0.5) / 20 * (400 - 12))  # noqa: E731  (views.js's x(step))
    for step in got:
        assert cols[max(0, x(step) - 3):x(step) + 4].any(), f"step {step} not drawn"
    missing = [s for s in range(20) if s not in got and s - 1 not in got and s + 1 not in got]
    for step in missing:  # nothing drawn across a gap
        assert not cols[x(step) - 2:x(step) + 3].any(), f"a line crosses the gap at step {step}"


def test_a_run_with_every_step_is_one_unbroken_line(page):
    cols = coloured_columns(draw(page, rows(range(20))))
    x0, x1 = int(6 + 0.5 / 20 * 388), int(6 + 19.5 / 20 * 388)
    assert cols[x0 + 1:x1].all()
