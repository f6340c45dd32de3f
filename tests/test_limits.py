"""One table of limits (bridge/limits.py): every door and every static copy agrees with it.

Each door is driven at the table's edges (the bound accepted, one past it refused with one
sentence); the copies that cannot import the table (the viewer's HTML attributes, the
protocol document) are parsed and compared.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import types
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bridge.control import ControlError, parse_json_control, parse_osc_control
from bridge.engine import GenerationRequest, check_request
from bridge.errors import InvalidRequest
from bridge.limits import INT32_MAX, LIMITS, int32_range
from bridge.presets import FIELD_BY_KEY, PresetError, check_consistency, check_value, defaults

ROOT = Path(__file__).resolve().parents[1]
L = LIMITS

INT_SETTINGS = ("seed", "steps")


# --------------------------------------------------------------------------- remote controls


@pytest.mark.parametrize("name", INT_SETTINGS)
def test_controls_take_the_table_edges_and_refuse_one_past(name):
    bound = getattr(L, name)
    for edge in (bound.lo, bound.hi):
        assert parse_json_control({"type": "set", name: edge}).values == {name: edge}
        assert parse_osc_control(f"/daam/{name}", [edge]).values == {name: edge}
    for outside in (bound.lo - 1, bound.hi + 1):
        with pytest.raises(ControlError, match=f"{name} must be within {bound.lo}..{bound.hi}, got {outside}"):
            parse_json_control({"type": "set", name: outside})


def test_control_sizes_guidance_speed_follow_the_table():
    w = L.width
    assert parse_json_control({"type": "set", "size": [w.lo, w.hi]}).values == {"width": w.lo, "height": w.hi}
    for bad in (w.lo - w.multiple, w.hi + w.multiple):
        with pytest.raises(ControlError, match="within"):
            parse_json_control({"type": "set", "width": bad})
    with pytest.raises(ControlError, match=f"multiple of {w.multiple}"):
        parse_json_control({"type": "set", "width": w.lo + 1})
    assert parse_json_control({"type": "set", "guidance": L.guidance.hi}).values == {"guidance": L.guidance.hi}
    with pytest.raises(ControlError, match="guidance must be within"):
        parse_json_control({"type": "set", "guidance": L.guidance.hi + 0.5})
    assert parse_json_control({"type": "speed", "speed": L.speed.hi}).values == {"speed": L.speed.hi}
    with pytest.raises(ControlError, match="speed must be within"):
        parse_osc_control("/daam/speed", [L.speed.lo / 2])
    with pytest.raises(ControlError, match=f"has {L.prompt_words + 1} words; the limit is {L.prompt_words}"):
        parse_json_control({"type": "prompt", "prompt": " ".join(["w"] * (L.prompt_words + 1))})
    with pytest.raises(ControlError, match=f"the limit is {L.prompt_chars}"):
        parse_json_control({"type": "prompt", "prompt": "w" * (L.prompt_chars + 1)})


# --------------------------------------------------------------------------- presets


def test_preset_fields_read_their_ranges_from_the_table():
    for key in ("seed", "steps", "guidance", "vae_every", "speed"):
        f, bound = FIELD_BY_KEY[key], getattr(L, key)
        assert (f.lo, f.hi) == (bound.lo, bound.hi), key
    for key in ("width", "height", "map_size"):  # 0 still means "the model's own"
        assert (FIELD_BY_KEY[key].lo, FIELD_BY_KEY[key].hi) == (0, getattr(L, key).hi), key
    with pytest.raises(PresetError, match=f"seed must be within 0..{L.seed.hi}, got {L.seed.hi + 1}"):
        check_value(FIELD_BY_KEY["seed"], L.seed.hi + 1, "here")
    values = defaults()
    for size, ok in ((0, True), (L.width.lo, True), (L.width.hi, True), (L.width.lo + 1, False)):
        values["width"] = size
        if ok:
            check_consistency(values, "here")
        else:
            with pytest.raises(PresetError, match=f"multiple of {L.width.multiple}"):
                check_consistency(values, "here")


# --------------------------------------------------------------------------- engine (no model)


def test_engine_request_checks_use_the_table():
    req = GenerationRequest("a cat", seed=L.seed.hi, steps=L.steps.hi, guidance=L.guidance.hi,
                            width=L.width.hi, height=L.height.lo, vae_every=L.vae_every.hi)
    check_request(req)
    for field, value in (("seed", L.seed.hi + 1), ("steps", L.steps.hi + 1), ("width", L.width.hi + 8),
                         ("height", L.height.lo - 1), ("vae_every", L.vae_every.hi + 1), ("guidance", L.guidance.hi + 1)):
        with pytest.raises(InvalidRequest) as err:
            check_request(GenerationRequest("a cat", **{field: value}))
        assert field in str(err.value) and "\n" not in str(err.value)


def test_guidance_defaults_and_replay_speed_share_the_table():
    from bridge.models.defaults import MAX_GUIDANCE
    from bridge.replay import MAX_SPEED

    assert MAX_GUIDANCE == L.guidance.hi
    assert MAX_SPEED == L.speed.hi


def test_a_scheduler_with_fewer_steps_than_the_table_says_so(tiny_engine):
    """The table allows 1000 steps; DDIM with "leading" spacing and steps_offset 1 takes 999,
    and the refusal names the scheduler so the user knows the table is not the reason."""
    assert tiny_engine.max_steps < L.steps.hi
    with pytest.raises(InvalidRequest) as err:
        tiny_engine.validate(GenerationRequest("a cat", steps=L.steps.hi))
    message = str(err.value)
    assert message == (f"steps must be at most {tiny_engine.max_steps} for this model's DDIMScheduler, "
                       f"got {L.steps.hi}")


def test_a_live_set_within_the_table_but_beyond_the_scheduler_is_refused_by_the_engine(tiny_engine):
    from tests._live import WsClient, is_json, live_session

    with live_session(tiny_engine) as session:
        client = WsClient(session.websocket.url)
        client.send({"type": "set", "steps": L.steps.hi})
        err = client.until(is_json("error"))
        client.close()
    assert "for this model's DDIMScheduler" in err["message"]
    assert session.settings["steps"] == 3  # refused: nothing changed


# --------------------------------------------------------------------------- hello, viewer, TouchDesigner


def test_hello_carries_the_table_over_a_real_socket(tiny_engine):
    from tests._live import WsClient, live_session

    with live_session(tiny_engine) as session:
        client = WsClient(session.websocket.url)
        hello = client.recv()
        client.close()
    # the table's, with the sides this CPU runs in reasonable time (64×64 latent positions, 8 px each)
    expected = {**L.to_dict(), "width": {**L.width.to_dict(), "max": 512}, "height": {**L.height.to_dict(), "max": 512}}
    assert hello["type"] == "hello" and hello["limits"] == expected
    assert hello["limits"]["seed"] == {"min": 0, "max": 2**32 - 1}
    assert hello["limits"]["width"]["multiple"] == L.width.multiple


class _Inputs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.inputs = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "input" and "id" in a:
            self.inputs[a["id"]] = a


def test_viewer_form_fallbacks_agree_with_the_table():
    parser = _Inputs()
    parser.feed((ROOT / "web" / "index.html").read_text(encoding="utf-8"))
    for name in INT_SETTINGS:
        attrs, bound = parser.inputs[name], getattr(L, name)
        assert (int(attrs["min"]), int(attrs["max"])) == (bound.lo, bound.hi), name
    assert int(parser.inputs["prompt"]["maxlength"]) == L.prompt_chars
    app = (ROOT / "web" / "app.js").read_text(encoding="utf-8")
    assert "applyLimits(msg.limits)" in app  # the server's table replaces the fallbacks
    assert not re.search(r"2 \*\* 3[12]|4294967295|2147483647", app), "a seed bound copied into app.js"


def _build_touchdesigner_network(monkeypatch):
    """build_network.py against stand-ins for TouchDesigner's module; returns the COMP."""
    from tests.test_td_callbacks import StandInNode

    project = StandInNode("containerCOMP", "project1")
    td = types.ModuleType("td")
    td.op = lambda path: project
    td.ParMode = types.SimpleNamespace(EXPRESSION="expression")
    for kind in ("baseCOMP", "textDAT", "tableDAT", "websocketDAT", "oscinDAT", "scriptTOP", "feedbackTOP", "glslTOP",
                 "constantCHOP", "lagCHOP", "geometryCOMP", "rectangleSOP", "constantMAT", "cameraCOMP", "renderTOP",
                 "nullTOP", "parameterexecuteDAT", "rampTOP", "lookupTOP", "switchTOP"):
        setattr(td, kind, kind)
    monkeypatch.setitem(sys.modules, "td", td)
    path = ROOT / "td_project" / "build_network.py"
    exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), {"repo": str(ROOT), "__name__": "td_textport"})
    return project.op("attention_bridge")


def test_touchdesigner_parameters_hold_the_table_as_far_as_an_int_can(monkeypatch):
    comp = _build_touchdesigner_network(monkeypatch)
    for par, name in (("Seed", "seed"), ("Steps", "steps")):
        p = comp.par._pars[par]
        assert (p.min, p.max) == int32_range(getattr(L, name)), par
        assert p.clampMin and p.clampMax
    assert comp.par._pars["Seed"].max == INT32_MAX < L.seed.hi  # TouchDesigner's own ceiling, documented


def test_touchdesigner_takes_the_limits_from_hello():
    from bridge import protocol as P
    from tests.test_td_callbacks import StandInCOMP, ws_mod

    comp = StandInCOMP()
    hello = P.hello_message(server="t", presets=[], preset="", subscription=P.Subscription())
    ws_mod.onReceiveText(comp.op("bridge_ws"), 0, json.dumps(hello))
    assert (comp.par.Seed.min, comp.par.Seed.max) == int32_range(L.seed)
    assert (comp.par.Steps.min, comp.par.Steps.max) == (L.steps.lo, L.steps.hi)


# --------------------------------------------------------------------------- documents


def test_protocol_document_states_the_table():
    text = (ROOT / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")
    for row in (f"steps, {L.steps.lo}..{L.steps.hi}", f"guidance scale, finite, {L.guidance.lo:g}..{L.guidance.hi:g}",
                f"multiples of {L.width.multiple}, {L.width.lo}..{L.width.hi}", "seed, 0..2³²−1",
                f"speed factor, {L.speed.lo:g}..{L.speed.hi:g}", f"prompt ≤ {L.prompt_chars} characters and ≤ {L.prompt_words} words"):
        assert row in text, row
    assert L.seed.hi == 2**32 - 1  # the row above spells it out
    example = re.search(r"`hello` — sent once on connect:\n```json\n(.*?)```", text, re.S).group(1)
    assert json.loads(example)["limits"] == L.to_dict()


# --------------------------------------------------------------------------- command line, before the model


@pytest.mark.parametrize("args,message", [
    (["--seed", str(L.seed.hi + 1)], f"seed must be from 0 to {L.seed.hi}"),
    (["--steps", str(L.steps.hi + 1)], f"steps must be from 1 to {L.steps.hi}"),
    (["--width", str(L.width.hi + 8)], f"width must be from {L.width.lo} to {L.width.hi}"),
])
def test_render_refuses_out_of_table_flags_before_loading_a_model(tmp_path, args, message):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "run_bridge.py", "render", "--prompt", "a cat", "--model", str(tmp_path / "absent"),
                        "--out", str(out), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not out.exists()
