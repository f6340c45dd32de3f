"""The browser viewer (web/) in real headless Chromium against a real running bridge.

A `serve` process on the built-in tiny model is started once for the module; each test opens
the viewer it serves, types into the console and checks what the canvases show by reading
their pixels.  A replay of a recording goes over the same wire and must show the same way.
Screenshots go to test-artifacts/; with BRIDGE_UPDATE_DOCS=1 the run uses the built-in shapes
model at full length and the screenshots also replace docs/img/ (shown in README and docs).
"""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bridge.frames import RunEnd, RunStart, StepFrame, attention_mass
from bridge.phases import PhaseSchedule
from bridge.recording import Recorder
from tests._browser import ROOT, browser_page
from tests._live import WsClient
from tests._scenes import SUN, sun_over_sea

DOCS_IMG = ROOT / "docs" / "img"
ARTIFACTS = Path(os.environ.get("BRIDGE_TEST_ARTIFACTS", ROOT / "test-artifacts"))
UPDATE_DOCS = os.environ.get("BRIDGE_UPDATE_DOCS") == "1"
PARTICLES = 16384 if UPDATE_DOCS else 1024  # few particles: software GL shares the 2 cores with the model
MODEL = "builtin" if UPDATE_DOCS else "builtin:tiny"  # the docs show the real built-in model
STEPS = 20 if UPDATE_DOCS else 6
# The tiny random model's images and maps fill their canvases; the shapes model draws objects on
# a dark background with maps on the objects, so the docs run asks only that something is lit.
LIT = 0.05 if UPDATE_DOCS else 0.5
HERO_SEED = 0  # README's picture: a seed the built-in model draws the prompt cleanly with
PROMPT, DOCS_WORD = ("a yellow star and a green circle", "star") if UPDATE_DOCS else ("a red circle above a blue square", None)


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BridgeProcess:
    """`python run_bridge.py ARGS` in the background; waits for its `viewer:` line."""

    def __init__(self, args: list[str], timeout: float = 180.0):
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "run_bridge.py"), *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        )
        ready = threading.Event()

        def pump():
            for line in self.proc.stdout:
                self.lines.append(line.rstrip())
                if line.startswith("viewer:"):
                    self.url = line.split(None, 1)[1].strip()
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(timeout) or self.proc.poll() is not None:
            self.stop()
            raise AssertionError("bridge did not start:\n" + "\n".join(self.lines[-30:]))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="module")
def live_bridge():
    bridge = BridgeProcess([
        "serve", "--model", MODEL, "--port", str(free_port()), "--osc-in-port", "0",
        "--osc-out", f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}", "--no-progress", "--no-autostart",
    ])
    yield bridge
    bridge.stop()


def canvas_pixels(page, selector: str) -> np.ndarray:
    """A canvas's pixels as (h, w, 4) uint8: the page encodes it as PNG (WebGL canvases too,
    drawn with preserveDrawingBuffer), Python decodes it."""
    url = page.evaluate("(sel) => document.querySelector(sel).toDataURL('image/png')", selector)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGBA"))


def lit_fraction(px: np.ndarray, level: int = 24) -> float:
    return float((px[..., :3].max(axis=2) > level).mean())


def settle_for_docs(page) -> None:
    """For the docs' screenshots: give the particle morph 15 s of simulation to settle."""
    if UPDATE_DOCS:
        steps = page.evaluate("window.viewer.counts.simSteps")
        page.wait_for_function(f"window.viewer.counts.simSteps > {steps + 900}", timeout=120_000)


def save_screenshot(page, name: str) -> None:
    for folder in (ARTIFACTS, DOCS_IMG) if UPDATE_DOCS else (ARTIFACTS,):
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / name), full_page=True)


def open_viewer(page, url: str) -> None:
    page.goto(f"{url}?particles={PARTICLES}")
    page.wait_for_function("window.viewer && window.viewer.connection === 'open'", timeout=20_000)


def submit(page, prompt: str, steps, seed=None) -> None:
    """Type a run into the viewer's console as a VJ would and press Enter."""
    page.fill("#prompt", prompt)
    if seed is not None:
        page.fill("#seed", str(seed))
    page.fill("#steps", str(steps))
    page.press("#prompt", "Enter")


def wait_run_end(page, prompt: str, timeout: float = 120_000) -> None:
    """Until the page has seen the end of a run of ``prompt`` (a page opened after an earlier
    run is shown that run at once, so counting run_end messages is not enough)."""
    page.wait_for_function("([p]) => { const v = window.viewer; return v.run && v.run.prompt === p && v.ended === v.run.run_id; }",
                           arg=[prompt], timeout=timeout)


def wait_idle(bridge, timeout: float = 120.0) -> None:
    """Until the bridge runs nothing: an earlier test's run must not end inside this one."""
    client = WsClient(bridge.url.replace("http://", "ws://"))
    try:
        client.send({"type": "status"})
        client.until(lambda m: isinstance(m, dict) and m.get("type") == "status" and m.get("state") == "idle", timeout)
    finally:
        client.close()


def submit_ws(bridge, prompt: str, steps: int) -> str:
    """Start a run as another client would (the stage view has no console); returns once that
    run has started (a client joining mid-run is first sent the current run's start)."""
    client = WsClient(bridge.url.replace("http://", "ws://"))
    try:
        client.send({"type": "status"})
        before = client.until(lambda m: isinstance(m, dict) and m.get("type") == "status", 30)["run_id"]
        client.send({"type": "prompt", "prompt": prompt, "steps": steps})
        return client.until(lambda m: isinstance(m, dict) and m.get("type") == "run_start" and m["run_id"] != before, 60)["run_id"]
    finally:
        client.close()


def counts(page) -> dict:
    return page.evaluate("({...window.viewer.counts})")


def test_a_typed_prompt_runs_and_every_panel_fills(live_bridge):
    with browser_page() as page:
        open_viewer(page, live_bridge.url)
        assert lit_fraction(canvas_pixels(page, "#preview")) == 0.0  # nothing before a run
        submit(page, PROMPT, STEPS, seed=HERO_SEED)
        wait_run_end(page, PROMPT)
        page.wait_for_function("window.viewer.counts.particleFrames > 10", timeout=60_000)  # particles drawn

        run = page.evaluate("window.viewer.run")
        assert run["prompt"] == PROMPT
        assert run["seed"] == HERO_SEED and run["steps"] == STEPS
        c = counts(page)
        assert c["steps"] + int(page.evaluate("Number(document.querySelector('#dropped').textContent.split(' ')[0]) || 0")) == STEPS
        assert c["maps"] >= 1 and c["cumulative"] >= 1 and c["preview"] >= 1 and c["final"] == 1
        chips = page.locator("#words .word").all_inner_texts()
        assert chips == run["words"] and "circle" in chips
        # The run starts on its focus word (the first shape the model knows), never on "a".
        focus = run["words"].index("star" if DOCS_WORD else "circle")
        assert run["focus"] == focus and page.evaluate("window.viewer.selected") == focus
        assert page.inner_text("#heat-word") == run["words"][focus]
        assert page.get_attribute(f"#words .word[data-index='{focus}']", "aria-pressed") == "true"
        assert page.locator("#grid canvas").count() == len(run["words"])
        assert page.inner_text("#step").startswith(f"step {STEPS}/{STEPS}")

        preview = canvas_pixels(page, "#preview")
        assert lit_fraction(preview) > LIT and preview[..., :3].std() > 2  # an image, not a flat fill
        assert lit_fraction(canvas_pixels(page, "#heat")) > LIT
        assert lit_fraction(canvas_pixels(page, "#grid canvas")) > LIT
        timeline = canvas_pixels(page, "#timeline")
        assert (np.abs(timeline[..., 0].astype(int) - timeline[..., 2]) > 60).sum() > 50  # coloured lines drawn
        particles = canvas_pixels(page, "#particles")
        lit = int((particles[..., :3].max(axis=2) > 8).sum())
        assert PARTICLES // 3 < lit < 0.9 * particles.shape[0] * particles.shape[1], f"particles are points on black ({lit} lit pixels)"
        assert counts(page)["particleFrames"] > 10
        assert not page.errors, page.errors
        if DOCS_WORD:  # the docs show a noun's map and its particles settling on the object
            page.click(f"#words .word[data-index='{run['words'].index(DOCS_WORD)}']")
            settle_for_docs(page)
        save_screenshot(page, "viewer.png")


def test_clicking_a_word_selects_it_on_the_bridge_and_redraws_its_heat_map(live_bridge):
    with browser_page() as page:
        open_viewer(page, live_bridge.url)
        submit(page, "green triangle left of a yellow star", 4)
        wait_run_end(page, "green triangle left of a yellow star")
        before = canvas_pixels(page, "#heat")
        words = page.evaluate("window.viewer.run.words")
        target = words.index("star")
        statuses = counts(page)["json"]
        page.click(f"#words .word[data-index='{target}']")
        # The bridge confirms with a status message naming the new selection.
        page.wait_for_function(f"window.viewer.counts.json > {statuses} && window.viewer.selected === {target}", timeout=10_000)
        assert page.inner_text("#heat-word") == "star"
        assert page.get_attribute(f"#words .word[data-index='{target}']", "aria-pressed") == "true"
        after = canvas_pixels(page, "#heat")
        assert np.abs(after.astype(int) - before).mean() > 1.0  # another word, another map
        assert not page.errors, page.errors


def second_page(page):
    """Another tab in the same browser, its errors collected like the first's."""
    other = page.context.new_page()
    other.errors = []
    other.on("pageerror", lambda exc: other.errors.append(str(exc)))
    other.on("console", lambda msg: other.errors.append(msg.text) if msg.type == "error" else None)
    return other


def coloured_pixels(px: np.ndarray) -> int:
    """Saturated pixels: the timeline's word lines (its background and shading are grey-blue)."""
    rgb = px[..., :3].astype(int)
    return int((rgb.max(axis=2) - rgb.min(axis=2) > 60).sum())


def test_a_page_opened_mid_run_shows_the_run_and_its_timeline(live_bridge):
    prompt, steps = "a blue star right of a red cross", 40
    with browser_page() as page:
        open_viewer(page, live_bridge.url)
        submit(page, prompt, steps, seed=5)
        page.wait_for_function("([p]) => window.viewer.run && window.viewer.run.prompt === p && window.viewer.counts.steps >= 3",
                               arg=[prompt], timeout=120_000)
        late = second_page(page)
        open_viewer(late, live_bridge.url)
        late.wait_for_function("([p]) => window.viewer.run && window.viewer.run.prompt === p && window.viewer.step",
                               arg=[prompt], timeout=20_000)
        first = late.evaluate("window.viewer.step.step")
        assert first >= 2, "the late page was sent the run from its start"
        wait_run_end(late, prompt)
        assert late.inner_text("#step").startswith(f"step {steps}/{steps}")
        # lines (or, joined at the last steps on a busy machine, dots) from the step it joined at on;
        # the crash this guards left the chart blank
        assert coloured_pixels(canvas_pixels(late, "#timeline")) > 0
        assert lit_fraction(canvas_pixels(late, "#heat")) > LIT
        assert not late.errors, late.errors
        assert not page.errors, page.errors


def test_a_page_opened_after_a_run_shows_the_finished_run(live_bridge):
    prompt, steps = "a green square below a yellow circle", 5
    with browser_page() as page:
        open_viewer(page, live_bridge.url)
        submit(page, prompt, steps, seed=9)
        wait_run_end(page, prompt)
        early_final = canvas_pixels(page, "#preview")
        late = second_page(page)
        open_viewer(late, live_bridge.url)
        wait_run_end(late, prompt, timeout=20_000)
        late.wait_for_function("window.viewer.counts.final >= 1", timeout=20_000)
        words = late.evaluate("window.viewer.run.words")
        assert late.locator("#words .word").all_inner_texts() == words and "square" in words
        assert late.inner_text("#step").startswith(f"step {steps}/{steps}")
        final = canvas_pixels(late, "#preview")
        assert lit_fraction(final) > LIT
        assert np.abs(final.astype(int) - early_final).mean() < 2  # the same finished image
        assert lit_fraction(canvas_pixels(late, "#heat")) > LIT
        assert lit_fraction(canvas_pixels(late, "#grid canvas")) > LIT
        assert coloured_pixels(canvas_pixels(late, "#timeline")) > 10  # the one step it was sent
        assert not late.errors, late.errors
        settle_for_docs(late)
        save_screenshot(late, "viewer-late-joiner.png")


def test_a_box_dragged_on_the_preview_gets_its_self_attention_map(live_bridge):
    """A VJ drags a box on the preview: the bridge hears it in image pixels, the next run's steps
    carry the box's self-attention map, the panel shows it and the particles can follow it."""
    with browser_page() as page:
        open_viewer(page, live_bridge.url)
        submit(page, PROMPT, 2, seed=1)  # a run first, so the page knows the image size
        page.wait_for_function("window.viewer.counts.final >= 1", timeout=60_000)
        box = page.locator("#preview").bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.25)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.6, steps=5)
        page.mouse.up()
        page.wait_for_function("window.viewer.regions.length === 1", timeout=10_000)
        region = page.evaluate("window.viewer.regions[0]")
        w, h = page.evaluate("[window.viewer.run.width, window.viewer.run.height]")
        x0, y0, x1, y1 = region["box"]  # the drag, in the run's image pixels
        assert abs(x0 - 0.25 * w) <= 1 and abs(y0 - 0.25 * h) <= 1 and abs(x1 - 0.5 * w) <= 1 and abs(y1 - 0.6 * h) <= 1
        assert "box" in page.inner_text("#self-region")
        # shift-drag: a contour instead of a box, sent as a polygon of at most 64 points
        page.keyboard.down("Shift")
        page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.2)
        page.mouse.down()
        for fx, fy in ((0.6, 0.2), (0.6, 0.7), (0.2, 0.7), (0.2, 0.25)):
            page.mouse.move(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy, steps=40)
        page.mouse.up()
        page.keyboard.up("Shift")
        page.wait_for_function("window.viewer.regions.length === 1 && !!window.viewer.regions[0].polygon", timeout=10_000)
        contour = page.evaluate("window.viewer.regions[0].polygon")
        assert 3 <= len(contour) <= 64
        xs, ys = [p[0] for p in contour], [p[1] for p in contour]
        assert abs(min(xs) - 0.2 * w) <= 2 and abs(max(xs) - 0.6 * w) <= 2 and abs(max(ys) - 0.7 * h) <= 2
        assert "contour of" in page.inner_text("#self-region")
        page.check("#follow-region")
        submit(page, PROMPT, STEPS, seed=2)
        page.wait_for_function(f"window.viewer.counts.self >= {STEPS}", timeout=120_000)
        shown = canvas_pixels(page, "#self")[..., :3].astype(float)
        assert lit_fraction(shown) > LIT / 2
        settle_for_docs(page)  # the docs show the particles gathered where the box looks
        save_screenshot(page, "viewer-self-attention.png")
        page.click("#clear-regions")
        page.wait_for_function("window.viewer.regions.length === 0", timeout=10_000)
        cleared = canvas_pixels(page, "#self")[..., :3].astype(float)
        # no region: the dimmed preview, no heat over it (its brightest pixels, since a focused
        # map lights only its object)
        assert np.percentile(cleared.max(-1), 99) < 0.6 * np.percentile(shown.max(-1), 99)
        assert not page.errors, page.errors


def test_concepts_typed_in_the_console_get_their_own_maps(live_bridge):
    """A VJ types concepts (any words) and presses Enter: the bridge hears them, the next run's
    steps carry a map per concept, the panel shows the chosen one (or the segmentation) and the
    particles can follow it."""
    wait_idle(live_bridge)
    with browser_page() as page:
        open_viewer(page, live_bridge.url)
        assert not page.is_visible("#concept-figure")  # no concepts, no panel
        before = page.evaluate("[window.viewer.counts.runs, window.viewer.run && window.viewer.run.run_id]")
        page.fill("#concepts-input", "circle, square, background")
        page.press("#concepts-input", "Enter")
        page.wait_for_function("document.body.dataset.concepts === '3'", timeout=10_000)
        assert page.locator("#concept-chips .word").all_inner_texts() == ["circle", "square", "background"]
        page.wait_for_function("window.viewer.state === 'idle'", timeout=10_000)
        # Enter here sets concepts, it starts no run
        assert page.evaluate("[window.viewer.counts.runs, window.viewer.run && window.viewer.run.run_id]") == before
        submit(page, PROMPT, STEPS, seed=4)
        page.wait_for_function("window.viewer.counts.concepts >= 2 && window.viewer.counts.final >= 1", timeout=120_000)
        heat = canvas_pixels(page, "#concept")
        assert lit_fraction(heat) > LIT
        page.click("#concept-chips .word >> nth=1")
        assert page.evaluate("window.viewer.conceptSelected") == 1
        page.check("#concept-segments")
        segments = canvas_pixels(page, "#concept")[..., :3].astype(int)
        assert np.abs(segments - heat[..., :3]).mean() > 1  # a different picture: one colour per concept
        page.check("#follow-concept")
        assert page.evaluate("window.viewer.particles !== null")
        settle_for_docs(page)
        save_screenshot(page, "viewer-concepts.png")
        page.fill("#concepts-input", "")
        page.press("#concepts-input", "Enter")
        page.wait_for_function("window.viewer.conceptSetting.length === 0", timeout=10_000)  # the bridge heard it
        assert page.is_visible("#concept-figure")  # the shown run's concept maps stay until the next run
        assert not page.errors, page.errors


def test_the_stage_view_fills_the_window_and_answers_its_keys(live_bridge):
    """What an installation puts on the projector: ?stage shows only the particle morph, the
    whole window, no cursor; keys pick the word (the bridge hears it), the view and the law."""
    wait_idle(live_bridge)  # a run ending (or starting) later would move the page's selection
    with browser_page() as page:
        page.set_viewport_size({"width": 1280, "height": 720})
        page.goto(f"{live_bridge.url}?particles={PARTICLES}&stage")
        page.wait_for_function("window.viewer && window.viewer.connection === 'open'", timeout=20_000)
        box = page.locator("#particles").bounding_box()
        assert (box["x"], box["y"], box["width"], box["height"]) == (0, 0, 1280, 720)
        for chrome in ("header", "#console", "#words", "#timeline", "#preview", "#heat"):
            assert not page.is_visible(chrome), chrome
        assert page.evaluate("getComputedStyle(document.body).cursor") == "none"
        assert page.evaluate("[document.getElementById('particles').width, document.getElementById('particles').height]") == [1280, 720]
        run_id = submit_ws(live_bridge, PROMPT, STEPS)
        page.wait_for_function("([id]) => window.viewer.ended === id && window.viewer.counts.final >= 1", arg=[run_id], timeout=120_000)
        start = page.evaluate("window.viewer.selected")
        page.keyboard.press("ArrowRight")
        page.wait_for_function(f"window.viewer.selected === {(start + 1) % 7}", timeout=5_000)
        attraction = page.evaluate("window.viewer.law.attraction")
        page.keyboard.press("]")
        assert page.evaluate("window.viewer.law.attraction") == attraction + 1
        size = page.evaluate("window.viewer.law.pointSize")
        page.keyboard.press(".")
        assert page.evaluate("window.viewer.law.pointSize") == size + 0.25
        # the phase keys hold the morph in chaos (2) or formed (3), or give it back to the run (1)
        # (the run has ended in its detail phase, so following it means formed: w near 1)
        page.keyboard.press("3")
        page.wait_for_function("window.viewer.phaseSmooth > 0.95", timeout=10_000)
        page.keyboard.press("2")
        page.wait_for_function("window.viewer.phaseSmooth < 0.05", timeout=10_000)
        page.keyboard.press("1")
        page.wait_for_function("window.viewer.phaseTarget > 0.5 "
                               "&& Math.abs(window.viewer.phaseSmooth - window.viewer.phaseTarget) < 0.05", timeout=10_000)
        page.keyboard.press("ArrowLeft")  # back to the focus word, for the picture
        page.wait_for_function(f"window.viewer.selected === {start}", timeout=5_000)
        page.keyboard.press("h")
        assert page.is_visible("#stage-help") and "previous / next word" in page.inner_text("#stage-help")
        page.keyboard.press("p")  # the heat map over the image instead of the particles
        assert page.locator("#heat").bounding_box()["width"] == 1280 and not page.is_visible("#particles")
        assert lit_fraction(canvas_pixels(page, "#heat")) > LIT / 4
        save_screenshot(page, "viewer-stage.png")
        page.keyboard.press("Escape")
        assert page.is_visible("header") and page.locator("#heat").bounding_box()["width"] == 384
        assert not page.errors, page.errors


def test_the_particle_morph_runs_on_real_time_not_on_drawn_frames(live_bridge):
    """A page drawing few frames takes several simulation steps per frame: over a stretch of
    frames the simulation advances as many seconds as passed (60 steps of 1/60 s a second),
    whatever the frame rate."""
    with browser_page() as page:
        open_viewer(page, live_bridge.url)
        page.wait_for_function("window.viewer.counts.particleFrames > 10", timeout=20_000)
        frames = page.evaluate("""() => {
            const v = window.viewer, busy = () => { const t = performance.now() + 40; while (performance.now() < t) {} };
            window.__slow = setInterval(busy, 45);  // a page that can draw only a few frames a second
            window.__start = [v.counts.simSteps, performance.now()];
            return v.counts.particleFrames;
        }""")
        # over 30 frames drawn while throttled (a condition, not a fixed wait)
        page.wait_for_function(f"window.viewer.counts.particleFrames >= {frames + 30}", timeout=60_000)
        steps = page.evaluate("""() => { clearInterval(window.__slow);
            return [window.viewer.counts.simSteps - window.__start[0], performance.now() - window.__start[1]]; }""")
        simulated, elapsed_ms = steps
        assert simulated / 60 == pytest.approx(elapsed_ms / 1000, rel=0.35), steps


def test_a_slow_renderer_gets_fewer_particles_unless_a_count_was_asked_for(live_bridge):
    """A page that can draw only a few frames a second (software GL on a show PC) drops to a
    quarter of the particles, and again, down to 4096; ?particles=N is kept as asked."""
    slow = """() => { const busy = () => { const t = performance.now() + 60; while (performance.now() < t) {} };
                      window.__slow = setInterval(busy, 65); }"""
    with browser_page() as page:
        page.goto(live_bridge.url)  # the default count
        page.wait_for_function("window.viewer && window.viewer.particles", timeout=20_000)
        assert page.evaluate("window.viewer.particles.count") == 65536
        page.evaluate(slow)
        page.wait_for_function("window.viewer.particles.count <= 16384", timeout=60_000)
        assert "draws slowly" in page.evaluate("window.viewer.particleNote")
        assert not page.errors, page.errors
    with browser_page() as page:
        page.goto(f"{live_bridge.url}?particles=65536")
        page.wait_for_function("window.viewer && window.viewer.counts.particleFrames > 5", timeout=20_000)
        page.evaluate(slow)
        page.wait_for_function("window.viewer.counts.particleFrames > 60", timeout=60_000)
        assert page.evaluate("window.viewer.particles.count") == 65536


def test_fewer_particles_after_a_run_still_gather_into_its_image(live_bridge):
    """A show PC's renderer slows down after a run has ended: the fewer particles are scattered
    anew and must gather again into the finished image, not stay in chaos until the next run
    (the morph's phase is the run's, not the renderer's)."""
    wait_idle(live_bridge)
    with browser_page() as page:
        page.goto(live_bridge.url)  # the default count, which a slow renderer lowers
        page.wait_for_function("window.viewer && window.viewer.connection === 'open' && window.viewer.particles", timeout=20_000)
        submit(page, PROMPT, STEPS, seed=5)
        page.wait_for_function("window.viewer.state === 'idle' && window.viewer.counts.steps >= 1", timeout=120_000)
        target = page.evaluate("window.viewer.phaseTarget")
        assert target > 0.5  # the last step is in the detail phase: the morph holds the image
        page.evaluate("""() => { const busy = () => { const t = performance.now() + 60; while (performance.now() < t) {} };
                                 window.__slow = setInterval(busy, 65); }""")
        page.wait_for_function("window.viewer.particles.count <= 16384", timeout=60_000)
        page.evaluate("clearInterval(window.__slow)")
        assert page.evaluate("window.viewer.phaseTarget") == target
        page.wait_for_function(f"window.viewer.phaseSmooth > {0.9 * target}", timeout=20_000)
        assert not page.errors, page.errors


def test_a_bad_value_is_refused_with_the_bridges_sentence(live_bridge):
    with browser_page() as page:
        open_viewer(page, live_bridge.url)
        submit(page, "a cat", 0)
        page.wait_for_function("window.viewer.errors.length > 0", timeout=10_000)
        assert "steps must be within 1..1000, got 0" in page.inner_text("#message")
        assert page.evaluate("window.viewer.connection") == "open"  # the connection survives
        # news the page did not ask for (a run another client starts) leaves the refusal readable
        runs = page.evaluate("window.viewer.counts.runs")
        client = WsClient(live_bridge.url.replace("http://", "ws://"))
        try:
            client.send({"type": "prompt", "prompt": "a dog", "steps": 2})
            page.wait_for_function(f"window.viewer.counts.runs > {runs}", timeout=60_000)
        finally:
            client.close()
        assert "steps must be within 1..1000, got 0" in page.inner_text("#message")


def synthetic_recording(folder: Path, steps: int = 8) -> np.ndarray:
    """A recording of a made-up run whose maps and images are known: "sun" attends to the sun,
    "sea" to the sea, and the maps emerge from noise as the run goes on."""
    words = ("a", "yellow", "sun", "over", "a", "blue", "sea")
    h = w = 32
    start = RunStart("replay-test-run", " ".join(words), "", 1, steps, 7.5, 128, 128, (h, w), words,
                     tuple((i + 1,) for i in range(len(words))), (), "synthetic", "none", PhaseSchedule())
    rec = Recorder(folder)
    rec.on_run_start(start)
    yy, xx = (np.mgrid[0:h, 0:w] + 0.5) / h
    sun = np.exp(-((xx - SUN[0]) ** 2 + (yy - SUN[1]) ** 2) / (2 * 0.08**2))
    sea = 1 / (1 + np.exp(-(yy - 0.62) * 40))
    target = {"yellow": sun * 0.8, "sun": sun, "blue": sea * 0.8, "sea": sea}
    rng = np.random.default_rng(0)
    image = sun_over_sea()
    cumulative = np.zeros((len(words), h, w), np.float32)
    for s in range(steps):
        t = (s + 1) / steps
        maps = np.stack([(1 - t) * rng.random((h, w)) + t * target.get(word, 0.15 + 0.05 * rng.random((h, w)))
                         for word in words]).astype(np.float32)
        cumulative += maps
        noise = rng.integers(0, 255, image.shape)
        preview = ((1 - t) * noise + t * image).astype(np.uint8)
        rec.on_step(StepFrame("replay-test-run", s, steps, 1000.0 - 100 * s, start.phases.phase_at(s, steps),
                              start.phases.weights_at(s, steps), words, maps.astype(np.float16),
                              cumulative.astype(np.float16), attention_mass(maps), preview, 0.25 * (s + 1)))
    rec.on_run_end(RunEnd("replay-test-run", "completed", steps, 0.25 * steps, image))
    return image


def region(px: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    h, w = px.shape[:2]
    y, x = (np.mgrid[0:h, 0:w] + 0.5) / np.array([h, w])[:, None, None]
    return px[(x - cx) ** 2 + (y - cy) ** 2 < r**2]


def sun_particles_are_yellow(px: np.ndarray) -> bool:
    """Enough lit particles on the sun, and they are yellow (red and green well above blue)."""
    on_sun = region(px[..., :3].astype(int), SUN[0], SUN[1], SUN[2] * 0.8)
    on_sun = on_sun[on_sun.max(axis=1) > 30]
    if len(on_sun) <= 200:
        return False
    blue = np.median(on_sun[:, 2])
    return bool(np.median(on_sun[:, 0]) > 2 * blue and np.median(on_sun[:, 1]) > 2 * blue)


def wait_until(predicate, page, timeout: float) -> bool:
    """Poll ``predicate()`` every animation-ish interval until it holds or ``timeout`` s pass."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        page.wait_for_timeout(100)  # the page keeps animating meanwhile
    return True


def test_a_replayed_recording_shows_the_same_way(tmp_path):
    image = synthetic_recording(tmp_path / "run")
    bridge = BridgeProcess([
        "replay", str(tmp_path / "run"), "--paused", "--loop", "--gap", "60", "--port", str(free_port()), "--osc-in-port", "0",
        "--osc-out", f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}", "--no-progress",
    ], timeout=60)
    try:
        with browser_page() as page:
            page.goto(f"{bridge.url}?particles=16384")
            page.wait_for_function("window.viewer && window.viewer.run !== null", timeout=20_000)
            assert page.locator("#words .word").all_inner_texts() == ["a", "yellow", "sun", "over", "a", "blue", "sea"]
            page.click("#words .word[data-index='2']")  # "sun", before the steps come
            page.wait_for_function("window.viewer.selected === 2", timeout=10_000)
            # A run starts in chaos: particles scattered over the whole image, far from home.
            spread = page.evaluate("""async () => {
                const { gridHomes } = await import('/particles.js');
                const sim = window.viewer.particles, s = sim.readState(), h = gridHomes(sim.count, 1);
                let d = 0;
                for (let i = 0; i < sim.count; i++) d += Math.hypot(s[4 * i] - h[2 * i], s[4 * i + 1] - h[2 * i + 1]);
                return d / sim.count;
            }""")
            assert spread > 0.25
            # A replay has nothing to type: no prompt, seed, steps or Generate; a speed and Next instead.
            page.wait_for_function("document.body.dataset.mode === 'replay'", timeout=10_000)
            for hidden in ("#prompt", "#seed", "#steps", "#generate", "#cancel"):
                assert not page.is_visible(hidden), hidden
            assert page.is_visible("#speed") and page.is_visible("#next")
            page.fill("#speed", "0")  # refused by the bridge, and the refusal stays on screen
            page.dispatch_event("#speed", "change")
            page.wait_for_function("window.viewer.errors.length > 0", timeout=10_000)
            assert "speed must be within 0.001..1000" in page.inner_text("#message")
            page.fill("#speed", "1")
            page.dispatch_event("#speed", "change")
            page.click("#resume")  # the replay waits, paused, for the console's Resume
            page.wait_for_function("window.viewer.counts.final >= 1", timeout=30_000)
            assert counts(page)["steps"] == 8
            # The detail phase lets the particles settle home: the sun's turn yellow (checked below).
            assert wait_until(lambda: sun_particles_are_yellow(canvas_pixels(page, "#particles")), page, 90), \
                "the particles on the sun did not settle into its colour"

            # The final image fills the preview canvas (square image, square canvas).
            preview = canvas_pixels(page, "#preview")[..., :3].astype(int)
            expected = np.asarray(Image.fromarray(image).resize(preview.shape[1::-1], Image.NEAREST)).astype(int)
            assert np.abs(preview - expected).mean() < 6
            # The heat map of "sun" is brightest on the sun.
            heat = canvas_pixels(page, "#heat")[..., :3].astype(int).sum(axis=2)
            iy, ix = np.unravel_index(np.argmax(heat), heat.shape)
            assert abs(ix / heat.shape[1] - SUN[0]) < 0.08 and abs(iy / heat.shape[0] - SUN[1]) < 0.08
            # "sea" (last grid cell) lies below the horizon.
            cell = canvas_pixels(page, "#grid figure:last-child canvas")[..., :3].astype(int).sum(axis=2)
            assert cell[cell.shape[0] * 3 // 4:].mean() > cell[: cell.shape[0] // 2].mean() + 100
            # Particles carry their home's colour and the sun's have come home: yellow there.
            assert sun_particles_are_yellow(canvas_pixels(page, "#particles"))
            assert not page.errors, page.errors
            settle_for_docs(page)
            save_screenshot(page, "viewer-replay.png")
    finally:
        bridge.stop()


def test_the_form_takes_its_bounds_from_hello(live_bridge):
    """The page's own min/max are only fallbacks: made stale before the viewer's script runs,
    they still end up as the bridge's table once hello arrives."""
    from bridge.limits import LIMITS

    with browser_page() as page:
        # readyState "interactive" comes after parsing and before module scripts run.
        page.add_init_script("""document.addEventListener("readystatechange", () => {
            if (document.readyState !== "interactive") return;
            document.querySelector("#steps").max = "7";
            document.querySelector("#seed").max = "9";
            document.querySelector("#prompt").maxLength = 5;
            window.staleFallbacks = true;
        });""")
        open_viewer(page, live_bridge.url)
        assert page.evaluate("window.staleFallbacks") is True
        page.wait_for_function(f"document.querySelector('#steps').max === '{LIMITS.steps.hi}'", timeout=10_000)
        assert page.evaluate("[document.querySelector('#seed').min, document.querySelector('#seed').max]") == \
            [str(LIMITS.seed.lo), str(LIMITS.seed.hi)]
        assert page.evaluate("document.querySelector('#prompt').maxLength") == LIMITS.prompt_chars
