"""WebSocket DAT callbacks (the DAT ``bridge_ws``): binary frames → Script TOP textures.

Signatures are TouchDesigner's (docs.derivative.ca/WebsocketDAT_Class).  Everything lives in
the component made by build_network.py, reached through ``dat.parent()``:
  daam_frames   Text DAT with td_project/daam_frames.py (the decoder)
  step_map, attention_map, preview_image   Script TOPs that upload what is stored here
  bridge_state  Table DAT of name/value rows;  log  Text DAT of problems
"""

import json

# One texture per frame type: the selected word's maps only (TouchDesigner follows the
# bridge's selection), uint8 already normalised per word; metadata arrives over OSC.
SUBSCRIPTION = {
    "type": "subscribe",
    "frames": ["maps", "cumulative", "self", "concepts", "preview", "final"],
    "words": "selected",
    "dtype": "uint8",
    "meta": False,
}
TOP_FOR_FRAME = {"maps": "step_map", "cumulative": "attention_map", "self": "region_map", "concepts": "concept_map",
                 "preview": "preview_image", "final": "preview_image"}


def set_state(comp, name, value):
    table = comp.op("bridge_state")
    if table[name, 1] is None:
        table.appendRow([name, value])
    else:
        table[name, 1] = value


def log(comp, text):
    comp.op("log").write(text + "\n")
    print("attention bridge:", text)


INT32 = (-(2**31), 2**31 - 1)  # Int parameters are signed 32-bit


def apply_limits(comp, limits):
    """The bridge's bounds (hello.limits) on the Seed and Steps parameters, as far as an Int
    parameter can hold them; the build script's ranges come from the same table."""
    for par_name, key in (("Seed", "seed"), ("Steps", "steps")):
        bound = limits.get(key)
        if not isinstance(bound, dict) or not all(isinstance(bound.get(k), int) for k in ("min", "max")):
            continue
        par = getattr(comp.par, par_name)
        par.min, par.max = max(bound["min"], INT32[0]), min(bound["max"], INT32[1])
        par.clampMin = par.clampMax = True


def follow_selection(comp, index):
    """The bridge's selection on the Word parameter; stored first, so controls.py does not
    send it back as a new selection."""
    comp.store("selected", index)
    set_state(comp, "selected", index)
    if int(comp.par.Word.eval()) != index:
        comp.par.Word = index


def onConnect(dat):
    comp = dat.parent()
    dat.sendText(json.dumps(SUBSCRIPTION))
    set_state(comp, "connection", "connected")
    return


def onDisconnect(dat):
    set_state(dat.parent(), "connection", "disconnected")
    return


def onReceiveText(dat, rowIndex, message):
    comp = dat.parent()
    try:
        msg = json.loads(message)
    except ValueError:
        log(comp, "the bridge sent text that is not JSON; is Network Address/Port the bridge's?")
        return
    if not isinstance(msg, dict):
        return
    kind = msg.get("type")
    if kind == "hello" and isinstance(msg.get("limits"), dict):
        apply_limits(comp, msg["limits"])
    if kind in ("hello", "status"):
        set_state(comp, "state", msg.get("state", ""))
        if isinstance(msg.get("selected"), int):
            follow_selection(comp, msg["selected"])
            comp.store("selection_run", msg.get("run_id"))
    elif kind == "run_start":
        set_state(comp, "run", msg.get("run_id", ""))
        set_state(comp, "prompt", msg.get("prompt", ""))
        # A run starts on its focus word (the bridge's rule, bridge/wordpick.py) unless a status
        # of this very run already said what is selected (a late join after a pick).
        if isinstance(msg.get("focus"), int) and comp.fetch("selection_run", None) != msg.get("run_id"):
            follow_selection(comp, msg["focus"])
    elif kind == "run_end":
        set_state(comp, "state", msg.get("status", ""))
        if msg.get("error"):
            log(comp, "run failed: " + msg["error"])
    elif kind == "error":
        set_state(comp, "error", msg.get("message", ""))
        log(comp, msg.get("message", ""))
    return  # other types (later protocol versions add some): ignored


def onReceiveBinary(dat, contents):
    comp = dat.parent()
    frames = comp.op("daam_frames").module
    try:
        frame = frames.decode(contents)
    except frames.FrameError as exc:
        log(comp, str(exc))
        return
    kind = frame["type"]
    top = TOP_FOR_FRAME.get(kind)
    if top is None:
        return  # a frame type this network does not draw
    if kind == "concepts":  # every concept's map comes; the Concept parameter picks one (controls.py re-picks)
        comp.store("concept_maps", frame["data"])
        texture = frames.map_texture(frame["data"], int(comp.par.Concept.eval()))
    elif kind in frames.MAP_TYPES.values():
        texture = frames.map_texture(frame["data"], 0)
    else:
        texture = frames.image_texture(frame["data"])
    comp.store(top, texture)
    comp.op(top).cook(force=True)
    return


def onReceivePing(dat, contents):
    dat.sendPong(contents)
    return


def onReceivePong(dat, contents):
    return


def onMonitorMessage(dat, message):
    return
