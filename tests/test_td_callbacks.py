"""The TouchDesigner side (td_project/) against real protocol traffic from a real run.

TouchDesigner cannot run here; it is the true edge.  The callback scripts run unchanged against
**stand-ins** for the few TouchDesigner objects they touch (a COMP with store/fetch and
parameters, Table/Text DATs, a WebSocket DAT's sendText, a Script TOP's copyNumpyArray, a
Par's pulse).  Every class standing in for TouchDesigner is named ``StandIn…``.

The traffic is real: the built-in tiny model generates a run; its frames go through
bridge.protocol's encoder with the subscription the WebSocket DAT sends, and through the OSC
sink over a real UDP socket (bundles split into messages as the OSC In DAT does with "Split
Bundle into Messages" on).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import re
import socket
import sys
import threading
import time
import types

import numpy as np
import pytest
from pythonosc.osc_packet import OscPacket

from bridge import particles as reference
from bridge import protocol as P
from bridge.bus import Bus
from bridge.control import parse_json_control
from bridge.frames import StepFrame, normalize_maps
from tests._browser import ROOT

TD = ROOT / "td_project"
SHADERS = ROOT / "shaders"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"td_project_{name}", TD / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


frames_mod = load("daam_frames")
ws_mod = load("ws_callbacks")
osc_mod = load("osc_callbacks")
top_mod = load("texture_top")
controls_mod = load("controls")


# --------------------------------------------------------------------- stand-ins for TouchDesigner


class StandInPar:
    """A TouchDesigner Par: eval(), val, pulse(), name, owner."""

    def __init__(self, name, value=None, owner=None):
        self.name, self.val, self.owner, self.pulses = name, value, owner, 0

    def eval(self):
        return self.val

    def pulse(self):
        self.pulses += 1


class StandInParCollection:
    """``op.par``: attribute access gives a StandInPar; assignment sets its value (as in TD)."""

    def __init__(self, owner, values=None):
        object.__setattr__(self, "_pars", {})
        object.__setattr__(self, "_owner", owner)
        for k, v in (values or {}).items():
            self._pars[k] = StandInPar(k, v, owner)

    def __getattr__(self, name):
        if name not in self._pars:
            self._pars[name] = StandInPar(name, None, self._owner)
        return self._pars[name]

    def __setattr__(self, name, value):
        getattr(self, name).val = value

    def __getitem__(self, name):  # n.par['tx'], as documented for ParCollection
        return getattr(self, name)


class StandInCell:
    def __init__(self, row, col):
        self.row, self.col = row, col
        self.val = row[col]


class StandInTableDAT:
    """A Table DAT: [row, col] by index or label (row label = column 0, column label = row 0)."""

    def __init__(self, rows=()):
        self.rows = [list(map(str, r)) for r in rows]

    @property
    def numRows(self):
        return len(self.rows)

    def _index(self, key):
        row, col = key
        r = row if isinstance(row, int) else next((i for i, x in enumerate(self.rows) if x and x[0] == row), None)
        c = col if isinstance(col, int) else (self.rows[0].index(col) if self.rows and col in self.rows[0] else None)
        if r is None or c is None or r >= len(self.rows) or c >= len(self.rows[r]):
            return None
        return r, c

    def __getitem__(self, key):
        ix = self._index(key)
        return None if ix is None else StandInCell(self.rows[ix[0]], ix[1])

    def __setitem__(self, key, value):
        ix = self._index(key)
        if ix is None:
            raise IndexError(f"no cell {key} (TouchDesigner raises too)")
        self.rows[ix[0]][ix[1]] = str(value)

    def appendRow(self, values):
        self.rows.append([str(v) for v in values])

    def clear(self, keepFirstRow=False):
        self.rows = self.rows[:1] if keepFirstRow else []

    def value(self, name):
        cell = self[name, 1]
        return None if cell is None else cell.val


class StandInTextDAT:
    def __init__(self, module=None):
        self.text, self.module = "", module

    def write(self, text):
        self.text += text


class StandInWebSocketDAT:
    def __init__(self, comp):
        self.comp, self.sent = comp, []

    def parent(self):
        return self.comp

    def sendText(self, message):
        self.sent.append(message)
        return len(message)

    def sendPong(self, contents):
        return len(contents)


class StandInScriptTOP:
    """A Script TOP whose callbacks DAT is texture_top.py: cook() runs onCook(self)."""

    def __init__(self, comp, name):
        self.comp, self.name, self.uploads = comp, name, []

    def parent(self):
        return self.comp

    def copyNumpyArray(self, array):
        assert array.ndim == 3 and array.shape[2] in (1, 2, 3, 4), "copyNumpyArray wants (h, w, components)"
        assert array.dtype in (np.uint8, np.uint16, np.float32), "copyNumpyArray wants uint8, uint16 or float32"
        self.uploads.append(np.array(array))

    def cook(self, force=False):
        top_mod.onCook(self)


class StandInOP:
    def __init__(self, comp, name):
        self.comp, self.name = comp, name
        self.par = StandInParCollection(self)


class StandInCOMP:
    """The Base COMP that build_network.py makes: children, storage, custom parameters."""

    PARAMETERS = {
        "Host": "127.0.0.1", "Port": 8765, "Oscport": 7000, "Oscprefix": "/daam", "Prompt": "", "Seed": 0, "Steps": 20,
        "Word": 0, "Attraction": 8.0, "Wind": 1.5, "Drag": 0.08, "Dt": 1 / 60, "Noisescale": 3.0, "Noisespeed": 0.05,
        "Attentionfloor": 0.1, "Phasegainnoise": 0.0, "Phasegainstructure": 0.7, "Phasegaindetail": 1.0,
        "Morphtime": 0.5, "Particles": 4096, "Regionx0": 0.0, "Regiony0": 0.0, "Regionx1": 0.0, "Regiony1": 0.0,
        "Followregion": False, "Concepts": "", "Concept": 0, "Followconcept": False,
    }

    def __init__(self):
        self.storage = {}
        self.par = StandInParCollection(self, self.PARAMETERS)
        self.children = {
            "daam_frames": StandInTextDAT(frames_mod),
            "log": StandInTextDAT(),
            "bridge_state": StandInTableDAT([["name", "value"]] + [[k, ""] for k in ("connection", "state", "selected")]),
            "words": StandInTableDAT([["index", "word"]]),
            "word_stats": StandInTableDAT([["index", "mass", "peak", "x", "y", "spread", "change"]]),
            "phase_target": StandInOP(self, "phase_target"),
            "state_feedback": StandInOP(self, "state_feedback"),
        }
        for name in ("attention_map", "step_map", "preview_image", "region_map", "concept_map", "homes", "initial_state"):
            self.children[name] = StandInScriptTOP(self, name)
        self.children["bridge_ws"] = StandInWebSocketDAT(self)
        self.osc_dat = StandInWebSocketDAT(self)  # only parent() is used by the OSC callbacks

    def op(self, name):
        return self.children[name]

    def store(self, key, value):
        self.storage[key] = value

    def fetch(self, key, default=None):
        return self.storage.get(key, default)


# --------------------------------------------------------------------- a real run, on the real wires


class RunCapture:
    def __init__(self):
        self.start = None
        self.steps: list[StepFrame] = []
        self.end = None

    def on_run_start(self, e):
        self.start = e

    def on_step(self, e):
        self.steps.append(e)

    def on_run_end(self, e):
        self.end = e


@pytest.fixture(scope="module")
def real_run(tiny_engine):
    """A 4-step run of the built-in tiny model, captured as records and as OSC datagrams."""
    from bridge.engine import GenerationRequest
    from bridge.sinks.osc import OscSink

    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(0.2)
    datagrams = []
    stop = threading.Event()

    def listen():
        while not stop.is_set():
            try:
                datagrams.append(receiver.recv(65536))
            except socket.timeout:
                continue

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    capture = RunCapture()
    osc = OscSink([("127.0.0.1", receiver.getsockname()[1])])
    bus = Bus([capture, osc])
    engine = tiny_engine  # session-wide (tests/conftest.py): the model loads once per test run
    request = engine.validate(GenerationRequest("a red circle above a blue square", seed=5, steps=4))
    engine.generate(request, bus)
    bus.close()
    deadline = time.time() + 5
    while time.time() < deadline and not any(b"/run/end" in d for d in datagrams):
        time.sleep(0.05)
    stop.set()
    listener.join(2)
    receiver.close()
    assert capture.end is not None and capture.end.status == "completed"
    return capture, datagrams


def ws_messages(capture: RunCapture, selected: int):
    """What the bridge's websocket sends this subscription for the run, in wire order."""
    sub = P.Subscription.from_dict({k: v for k, v in ws_mod.SUBSCRIPTION.items() if k != "type"})
    encoder = P.FrameEncoder()
    out = [P.encode_json(P.run_start_message(capture.start))]
    for frame in capture.steps:
        out += encoder.step_frames(frame, sub, selected)
    final = encoder.final_frame(capture.end, capture.start.steps, sub)
    out += [final, P.encode_json(P.run_end_message(capture.end))]
    return out


def deliver_ws(comp, messages):
    dat = comp.op("bridge_ws")
    for i, m in enumerate(messages):
        if isinstance(m, bytes):
            ws_mod.onReceiveBinary(dat, bytearray(m))  # TouchDesigner hands a byte array
        else:
            ws_mod.onReceiveText(dat, i, m)


def deliver_osc(comp, datagrams):
    """As an OSC In DAT with Split Bundle into Messages on: one callback per message."""
    row = 0
    for dgram in datagrams:
        for timed in OscPacket(dgram).messages:
            msg = timed.message
            osc_mod.onReceiveOSC(comp.osc_dat, row, msg.address, msg.dgram, 0.0, msg.address, list(msg.params), None)
            row += 1


# --------------------------------------------------------------------- signatures


DOCUMENTED = {
    # docs.derivative.ca/WebsocketDAT_Class
    (ws_mod, "onConnect"): ["dat"],
    (ws_mod, "onDisconnect"): ["dat"],
    (ws_mod, "onReceiveText"): ["dat", "rowIndex", "message"],
    (ws_mod, "onReceiveBinary"): ["dat", "contents"],
    (ws_mod, "onReceivePing"): ["dat", "contents"],
    (ws_mod, "onReceivePong"): ["dat", "contents"],
    (ws_mod, "onMonitorMessage"): ["dat", "message"],
    # docs.derivative.ca/OscinDAT_Class
    (osc_mod, "onReceiveOSC"): ["dat", "rowIndex", "message", "bytes", "timeStamp", "address", "args", "peer"],
    # docs.derivative.ca/ScriptTOP_Class
    (top_mod, "onSetupParameters"): ["scriptOp"],
    (top_mod, "onPulse"): ["par"],
    (top_mod, "onCook"): ["scriptOp"],
    # docs.derivative.ca/Parameter_Execute_DAT
    (controls_mod, "onValueChange"): ["par", "prev"],
    (controls_mod, "onPulse"): ["par"],
}


@pytest.mark.parametrize("module, name", list(DOCUMENTED), ids=[f"{m.__name__}.{n}" for m, n in DOCUMENTED])
def test_callback_signatures_match_touchdesigners(module, name):
    assert list(inspect.signature(getattr(module, name)).parameters) == DOCUMENTED[(module, name)]


def test_every_td_callback_module_defines_only_documented_callbacks():
    for module in (ws_mod, osc_mod, top_mod, controls_mod):
        callbacks = {n for n, f in vars(module).items() if re.match(r"on[A-Z]", n) and callable(f)}
        assert callbacks == {n for m, n in DOCUMENTED if m is module}, module.__name__


# --------------------------------------------------------------------- websocket


def test_on_connect_subscribes_to_the_selected_words_maps():
    comp = StandInCOMP()
    ws_mod.onConnect(comp.op("bridge_ws"))
    (sent,) = comp.op("bridge_ws").sent
    control = parse_json_control(json.loads(sent))  # the bridge accepts it
    assert control.kind == "subscribe"
    sub = P.Subscription.from_dict(control.values["subscription"])
    assert sub.words == "selected" and sub.dtype == "uint8" and "cumulative" in sub.frames and not sub.meta
    assert comp.op("bridge_state").value("connection") == "connected"


def test_binary_frames_of_a_real_run_become_flipped_textures(real_run):
    capture, _ = real_run
    selected = 2
    comp = StandInCOMP()
    deliver_ws(comp, ws_messages(capture, selected))

    last = capture.steps[-1]
    attention = comp.op("attention_map").uploads
    assert len(attention) == len(capture.steps)
    tex = attention[-1]
    h, w = last.cumulative.shape[1:]
    assert tex.shape == (h, w, 4) and tex.dtype == np.float32
    expected = normalize_maps(last.cumulative)[selected]
    # Bottom row first, as TouchDesigner expects; uint8 on the wire: within one level.
    np.testing.assert_allclose(tex[::-1, :, 0], expected, atol=1 / 255 + 1e-6)
    assert np.abs(tex[:, :, 0] - expected).max() > 0.05  # the flip matters: an unflipped upload would fail
    assert (tex[..., 3] == 1).all() and (tex[..., 0] == tex[..., 2]).all()

    step_tex = comp.op("step_map").uploads[-1]
    np.testing.assert_allclose(step_tex[::-1, :, 0], normalize_maps(last.maps)[selected], atol=1 / 255 + 1e-6)

    previews = comp.op("preview_image").uploads
    assert len(previews) == len(capture.steps) + 1  # every preview, then the final image
    np.testing.assert_array_equal(previews[-1][::-1, :, :3], capture.end.image)
    np.testing.assert_array_equal(previews[-2][::-1, :, :3], last.preview)
    assert previews[-1].dtype == np.uint8 and (previews[-1][..., 3] == 255).all()

    state = comp.op("bridge_state")
    assert state.value("prompt") == "a red circle above a blue square"
    assert state.value("state") == "completed"
    assert comp.op("log").text == ""


def test_a_regions_self_attention_frame_becomes_the_region_texture():
    """A type-5 frame (the bridge's self maps, all regions) uploads its first region, flipped."""
    comp = StandInCOMP()
    maps = np.zeros((2, 4, 6), np.float32)
    maps[0, 0, 5] = 1.0  # region 0 looks at the top right corner
    maps[1] = 1.0
    frame = P.encode_frame(5, P.convert_maps(maps, P.UINT8, "self"), run=1, step=0, total=1)
    ws_mod.onReceiveBinary(comp.op("bridge_ws"), bytearray(frame))
    tex = comp.op("region_map").uploads[-1]
    assert tex.shape == (4, 6, 4) and tex[::-1][0, 5, 0] == 1.0 and tex[..., 0].sum() == 1.0
    assert comp.op("log").text == ""


def test_a_concepts_frame_becomes_the_chosen_concepts_texture_and_the_concept_parameter_repicks():
    """A type-7 frame (every concept's map): the Concept parameter's one is uploaded, flipped;
    changing the parameter re-uploads another concept of the same frame."""
    comp = StandInCOMP()
    maps = np.zeros((3, 4, 6), np.float32)
    maps[0, 0, 0] = 1.0  # concept 0 sits top left
    maps[1, 3, 5] = 1.0  # concept 1 bottom right
    maps[2] = 0.5
    comp.par.Concept = 1
    frame = P.encode_frame(7, P.convert_maps(maps, P.UINT8, "concepts"), run=1, step=0, total=1)
    ws_mod.onReceiveBinary(comp.op("bridge_ws"), bytearray(frame))
    tex = comp.op("concept_map").uploads[-1]
    assert tex.shape == (4, 6, 4) and tex[::-1][3, 5, 0] == 1.0 and tex[..., 0].sum() == 1.0
    comp.par.Concept = 0
    controls_mod.onValueChange(comp.par.Concept, 1)
    assert comp.op("concept_map").uploads[-1][::-1][0, 0, 0] == 1.0
    comp.par.Concept = 9  # ahead of the bridge's three concepts: the last one
    controls_mod.onValueChange(comp.par.Concept, 0)
    assert comp.op("concept_map").uploads[-1][..., 0].max() == 1.0 and comp.op("log").text == ""


def test_set_concepts_sends_the_names_the_bridge_accepts():
    comp = StandInCOMP()
    comp.par.Concepts = " sky, circle ,, background "
    controls_mod.onPulse(comp.par.Setconcepts)
    control = parse_json_control(json.loads(comp.op("bridge_ws").sent[-1]))
    assert control.kind == "concepts" and control.values == {"concepts": ("sky", "circle", "background")}
    comp.par.Concepts = ""
    controls_mod.onPulse(comp.par.Setconcepts)
    assert parse_json_control(json.loads(comp.op("bridge_ws").sent[-1])).values == {"concepts": ()}


def test_frame_type_codes_are_the_bridges_table():
    from bridge import mapkinds

    assert frames_mod.MAP_TYPES == {k.code: k.name for k in mapkinds.kinds()}
    assert frames_mod.IMAGE_TYPES == {code: name for name, code in P.IMAGE_TYPES.items()}


def test_garbage_from_the_socket_is_logged_not_raised(real_run):
    capture, _ = real_run
    comp = StandInCOMP()
    dat = comp.op("bridge_ws")
    good = ws_messages(capture, 0)[1]
    ws_mod.onReceiveBinary(dat, bytearray(good))
    before = len(comp.op("attention_map").uploads) + len(comp.op("step_map").uploads)
    ws_mod.onReceiveBinary(dat, bytearray(b"\x00" * 10))
    ws_mod.onReceiveBinary(dat, bytearray(b"XXXX" + good[4:]))
    ws_mod.onReceiveBinary(dat, bytearray(good[:-7]))
    ws_mod.onReceiveText(dat, 0, "not json {")
    ws_mod.onReceiveText(dat, 1, json.dumps({"type": "error", "code": "invalid_value", "message": "steps must be within 1..500, got 0"}))
    after = len(comp.op("attention_map").uploads) + len(comp.op("step_map").uploads)
    assert after == before
    log = comp.op("log").text.splitlines()
    assert len(log) == 5
    assert "shorter than the 36-byte header" in log[0] and "not a DAAM version-1 frame" in log[1]
    assert "its shape needs" in log[2] and "not JSON" in log[3] and "steps must be within" in log[4]


# --------------------------------------------------------------------- OSC


def test_osc_of_a_real_run_fills_words_phase_and_statistics(real_run):
    capture, datagrams = real_run
    comp = StandInCOMP()
    deliver_osc(comp, datagrams)
    words = capture.start.words
    assert [r[1] for r in comp.op("words").rows[1:]] == list(words)
    state = comp.op("bridge_state")
    assert state.value("step") == "4" and state.value("total") == "4"
    assert state.value("phase") == "detail" and state.value("state") == "completed"
    last_weights = capture.steps[-1].phase_weights
    w = comp.op("phase_target").par.const0value.eval()
    assert w == pytest.approx(reference.phase_weight(last_weights), abs=1e-6)
    assert comp.op("state_feedback").par.resetpulse.pulses == 1  # particles scattered at run start
    stats = comp.op("word_stats").rows[1:]
    assert len(stats) == len(words)
    assert sum(float(r[1]) for r in stats) == pytest.approx(1.0, abs=1e-3)  # mass shares
    assert all(0.0 <= float(r[2]) <= 1.0 for r in stats)  # peak
    assert comp.op("log").text == ""


def test_osc_outside_the_prefix_or_with_bad_arguments_is_harmless():
    comp = StandInCOMP()
    osc_mod.onReceiveOSC(comp.osc_dat, 0, "", b"", 0.0, "/other/thing", [1], None)
    osc_mod.onReceiveOSC(comp.osc_dat, 1, "", b"", 0.0, "/daam/phase/weights", ["a"], None)
    assert "unexpected arguments for /daam/phase/weights" in comp.op("log").text


# --------------------------------------------------------------------- controls back to the bridge


def test_generate_sends_a_prompt_the_bridge_accepts_and_an_empty_prompt_is_refused_locally():
    comp = StandInCOMP()
    comp.par.Prompt = "  a  glowing jellyfish "
    comp.par.Seed = 42
    comp.par.Steps = 12
    controls_mod.onPulse(comp.par.Generate)
    control = parse_json_control(json.loads(comp.op("bridge_ws").sent[-1]))
    assert control.kind == "prompt" and control.values == {"prompt": "a glowing jellyfish", "seed": 42, "steps": 12}
    comp.par.Prompt = "   "
    controls_mod.onPulse(comp.par.Generate)
    assert len(comp.op("bridge_ws").sent) == 1 and "type a prompt" in comp.op("log").text
    controls_mod.onPulse(comp.par.Pause)
    assert parse_json_control(json.loads(comp.op("bridge_ws").sent[-1])).kind == "pause"


def test_region_pulses_send_a_box_a_pixel_or_none_the_bridge_accepts():
    comp = StandInCOMP()
    comp.par.Regionx0, comp.par.Regiony0, comp.par.Regionx1, comp.par.Regiony1 = 8.0, 10.0, 30.0, 40.0
    controls_mod.onPulse(comp.par.Setregion)
    control = parse_json_control(json.loads(comp.op("bridge_ws").sent[-1]))
    assert control.kind == "regions" and [r.to_dict() for r in control.values["regions"]] == [{"id": "td", "box": [8.0, 10.0, 30.0, 40.0]}]
    comp.par.Regionx1, comp.par.Regiony1 = 8.0, 10.0
    controls_mod.onPulse(comp.par.Setregion)
    control = parse_json_control(json.loads(comp.op("bridge_ws").sent[-1]))
    assert [r.shape for r in control.values["regions"]] == ["pixel"]
    controls_mod.onPulse(comp.par.Clearregion)
    assert parse_json_control(json.loads(comp.op("bridge_ws").sent[-1])).values == {"regions": ()}


def test_word_selector_sends_select_but_never_echoes_the_bridges_own_selection():
    comp = StandInCOMP()
    comp.par.Word = 3
    controls_mod.onValueChange(comp.par.Word, 0)
    control = parse_json_control(json.loads(comp.op("bridge_ws").sent[-1]))
    assert control.kind == "select" and control.values == {"word": 3}
    # The bridge announces selection 5 (e.g. chosen in the browser): the parameter follows…
    osc_mod.onReceiveOSC(comp.osc_dat, 0, "", b"", 0.0, "/daam/selected", [5], None)
    assert comp.par.Word.eval() == 5
    # …and the parameter change TouchDesigner then reports is not sent back.
    controls_mod.onValueChange(comp.par.Word, 3)
    assert len(comp.op("bridge_ws").sent) == 1


def test_particle_textures_match_the_reference_layout():
    comp = StandInCOMP()
    comp.par.Particles = 4096
    comp.op("homes").cook(force=True)
    comp.op("initial_state").cook(force=True)
    homes = comp.op("homes").uploads[-1]
    assert homes.shape == (64, 64, 4) and homes.dtype == np.float32
    np.testing.assert_array_equal(homes[..., :2].reshape(-1, 2), reference.grid_homes(4096, seed=0))
    state = comp.op("initial_state").uploads[-1]
    assert state[..., 2:].max() == 0 and 0 <= state[..., :2].min() and state[..., :2].max() <= 1
    controls_mod.onPulse(comp.par.Reset)  # a new scatter, and the feedback loop restarts from it
    assert not np.array_equal(comp.op("initial_state").uploads[-1], state)
    assert comp.op("state_feedback").par.resetpulse.pulses == 1


def test_texture_tops_upload_a_black_pixel_before_any_frame():
    comp = StandInCOMP()
    comp.op("attention_map").cook(force=True)
    (tex,) = comp.op("attention_map").uploads
    assert tex.shape == (1, 1, 4) and not tex.any()


# --------------------------------------------------------------------- the build script


class StandInNode:
    """A TouchDesigner operator as the build script sees it: create/op/par/connectors/text."""

    def __init__(self, kind, name, parent=None):
        self.kind, self.name, self.parent_node = kind, name, parent
        self.children_by_name: dict[str, StandInNode] = {}
        self.inputs: list[StandInNode] = []
        self.par = StandInParCollection(self)
        self.text = ""
        self.pages: dict[str, list] = {}
        self.nodeX = self.nodeY = 0
        self.outputConnectors = [types.SimpleNamespace(connect=lambda target: target.inputs.append(self))]

    @property
    def path(self):
        return (self.parent_node.path if self.parent_node else "") + "/" + self.name

    @property
    def children(self):
        return list(self.children_by_name.values())

    def create(self, kind, name):
        node = StandInNode(kind, name, self)
        self.children_by_name[name] = node
        return node

    def op(self, name):
        return self.children_by_name.get(name)

    def destroy(self):
        self.parent_node.children_by_name.pop(self.name, None)

    def clear(self):  # Table DAT
        self.rows = []

    def appendRow(self, values):
        self.rows.append(list(values))

    def appendCustomPage(self, name):
        page = []
        self.pages[name] = page

        def append(kind):
            def add(par_name, label=None):
                par = getattr(self.par, par_name)
                page.append((kind, par_name))
                return [par]
            return add

        return types.SimpleNamespace(**{f"append{k}": append(k) for k in ("Str", "Int", "Float", "Toggle", "Pulse")})


def test_build_script_makes_the_documented_network(monkeypatch):
    project = StandInNode("containerCOMP", "project1")
    stand_in_td = types.ModuleType("td")  # stands in for TouchDesigner's own module
    stand_in_td.op = lambda path: project
    stand_in_td.ParMode = types.SimpleNamespace(EXPRESSION="expression")
    for kind in ("baseCOMP", "textDAT", "tableDAT", "websocketDAT", "oscinDAT", "scriptTOP", "feedbackTOP", "glslTOP",
                 "constantCHOP", "lagCHOP", "geometryCOMP", "rectangleSOP", "constantMAT", "cameraCOMP", "renderTOP",
                 "nullTOP", "parameterexecuteDAT", "rampTOP", "lookupTOP", "switchTOP"):
        setattr(stand_in_td, kind, kind)
    monkeypatch.setitem(sys.modules, "td", stand_in_td)
    source = (TD / "build_network.py").read_text(encoding="utf-8")
    exec(compile(source, str(TD / "build_network.py"), "exec"), {"repo": str(ROOT), "__name__": "td_textport"})

    comp = project.op("attention_bridge")
    assert comp is not None and comp.kind == "baseCOMP"
    kinds = {n.name: n.kind for n in comp.children}
    assert kinds["bridge_ws"] == "websocketDAT" and kinds["bridge_osc"] == "oscinDAT"
    assert kinds["particle_step"] == "glslTOP" and kinds["state_feedback"] == "feedbackTOP"
    # Text DATs hold the repository's files verbatim.
    for name, path in (("ws_callbacks", TD / "ws_callbacks.py"), ("osc_callbacks", TD / "osc_callbacks.py"),
                       ("texture_top", TD / "texture_top.py"), ("daam_frames", TD / "daam_frames.py"),
                       ("controls", TD / "controls.py")):
        assert comp.op(name).text == path.read_text(encoding="utf-8"), name
    glsl = comp.op("particle_step_glsl").text
    assert glsl == (SHADERS / "prelude_touchdesigner.glsl").read_text() + (SHADERS / "particle_step.glsl").read_text()
    # The GLSL TOP gets its inputs in the order the prelude reads them, and every uniform.
    step = comp.op("particle_step")
    assert [n.name for n in step.inputs] == ["state_feedback", "homes", "particle_attention"]
    # the particles follow the word's map, or with Followregion on the region's self-attention map
    # (or with Followconcept on the chosen concept's map)
    assert [n.name for n in comp.op("particle_attention").inputs] == ["attention_map", "region_map", "concept_map"]
    assert comp.op("particle_attention").par.index.expr == "2 if parent().par.Followconcept else int(parent().par.Followregion)"
    assert comp.op("state_feedback").par.top.eval() == "particle_step"
    assert [n.name for n in comp.op("state_feedback").inputs] == ["initial_state"]
    declared = re.findall(r"uniform float (\w+);", (SHADERS / "particle_step.glsl").read_text())
    bound = [step.par._pars[f"vec{i}name"].val for i in range(len(declared))]
    assert sorted(bound) == sorted(declared)
    assert [n.name for n in comp.op("heat_colors").inputs] == ["attention_map", "heat_ramp"]
    assert [n.name for n in comp.op("out_heat").inputs] == ["heat_colors"]
    assert comp.op("bridge_ws").par.callbacks.eval() == "ws_callbacks"
    assert comp.op("bridge_osc").par.splitbundle.eval() is True
    for top in ("attention_map", "step_map", "preview_image", "region_map", "concept_map", "homes", "initial_state"):
        assert comp.op(top).par.callbacks.eval() == "texture_top"
    # The particle parameters start at the spec's defaults (docs/PARTICLES.md).
    spec = reference.ParticleParams()
    for par, value in (("Attraction", spec.attraction), ("Wind", spec.wind), ("Drag", spec.drag), ("Dt", spec.dt),
                       ("Noisescale", spec.noise_scale), ("Noisespeed", spec.noise_speed),
                       ("Attentionfloor", spec.attention_floor), ("Particles", spec.count),
                       ("Phasegainnoise", spec.phase_gain[0]), ("Phasegainstructure", spec.phase_gain[1]),
                       ("Phasegaindetail", spec.phase_gain[2])):
        assert comp.par._pars[par].val == pytest.approx(value), par
    # Every parameter the callbacks read exists on the COMP.
    made = {name for page in comp.pages.values() for _, name in page}
    assert set(StandInCOMP.PARAMETERS) <= made
    assert {"Generate", "Pause", "Resume", "Cancel", "Reset", "Active", "Setregion", "Clearregion", "Setconcepts"} <= made


# --------------------------------------------------------------------- the word a run starts on


def test_a_run_starts_the_word_parameter_on_its_focus_word_over_websocket_and_osc(real_run):
    capture, datagrams = real_run
    words = capture.start.words
    focus = words.index("circle")  # "a red circle above a blue square": the first known noun
    comp = StandInCOMP()
    deliver_ws(comp, ws_messages(capture, focus))
    assert comp.par.Word.eval() == focus and comp.op("bridge_state").value("selected") == str(focus)
    controls_mod.onValueChange(comp.par.Word, 0)  # TouchDesigner reports the change: not sent back
    assert comp.op("bridge_ws").sent == []
    comp = StandInCOMP()
    deliver_osc(comp, datagrams)  # the OSC sink announces the same word at the run's start
    assert comp.par.Word.eval() == focus


def test_a_late_join_keeps_the_word_picked_during_the_run(real_run):
    capture, _ = real_run
    comp = StandInCOMP()
    dat = comp.op("bridge_ws")
    run_id = capture.start.run_id
    ws_mod.onReceiveText(dat, 0, json.dumps({"type": "status", "state": "idle", "selected": 4, "run_id": run_id}))
    ws_mod.onReceiveText(dat, 1, P.encode_json(P.run_start_message(capture.start)))  # the catch-up's run_start
    assert comp.par.Word.eval() == 4
    ws_mod.onReceiveText(dat, 2, P.encode_json(P.run_start_message(capture.start).__or__({"run_id": "next"})))
    assert comp.par.Word.eval() == capture.start.words.index("circle")  # a new run: its focus again
