"""Build the attention-bridge network inside TouchDesigner (the source of truth; no .toe in git).

Run it in TouchDesigner's Textport (Dialogs → Textport and DATs), with ``repo`` set to where
this repository is checked out:

    repo = r'C:/path/to/attention-bridge'
    exec(open(repo + '/td_project/build_network.py').read())

It (re)creates ``/project1/attention_bridge``, a Base COMP holding:

  bridge_ws       WebSocket DAT → ws://Host:Port, subscribes to the selected word's maps
  bridge_osc      OSC In DAT on Oscport (words, phase, statistics)
  attention_map   Script TOP: the selected word's cumulative map (drives the particles)
  step_map        Script TOP: the selected word's map of the current step
  preview_image   Script TOP: the preview (then final) image
  homes / initial_state / state_feedback / particle_step
                  the particle system: GLSL TOP running shaders/particle_step.glsl (the same
                  update step as the browser viewer), fed back through a Feedback TOP
  phase_target → phase_lag   the phase weight w, smoothed so phases morph without cuts
  particle_color, particles_geo, camera, particles_render   drawing the particles
  heat_ramp → heat_colors   the heat map in the viewer's colours
  out_particles, out_preview, out_heat   Null TOPs to take the pictures from
  controls        Parameter Execute DAT: Generate/Word/… parameters → control messages

and custom parameters on the COMP (pages Bridge and Particles).  td_project/README.md walks
through it step by step.  Text DATs are filled from td_project/*.py and shaders/*.glsl, so
re-running this script after a `git pull` updates everything.
"""

import os

import td  # TouchDesigner's module: operator types, ParMode, op()


def repository() -> str:
    """Where the repository is: ``repo`` set in the Textport, else next to this file."""
    if globals().get("repo"):
        return globals()["repo"]
    if globals().get("__file__"):
        return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    raise RuntimeError("set repo = r'C:/path/to/attention-bridge' in the Textport before running build_network.py")


REPO = repository()
TD_DIR = os.path.join(REPO, "td_project")
SHADERS = os.path.join(REPO, "shaders")
NAME = "attention_bridge"


def load_limits():
    """The bridge's table of request bounds (bridge/limits.py: standard library only, so it
    loads in TouchDesigner's Python by path, without the rest of the bridge)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("attention_bridge_limits", os.path.join(REPO, "bridge", "limits.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


LIMITS = load_limits()


def load_palette():
    """The product's colours (bridge/palette.py, standard library only), loaded by path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("attention_bridge_palette", os.path.join(REPO, "bridge", "palette.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PALETTE = load_palette()

# Uniforms of shaders/particle_step.glsl and the expressions that feed them (Vectors page).
UNIFORMS = (
    ("uAttraction", "parent().par.Attraction"),
    ("uWind", "parent().par.Wind"),
    ("uDrag", "parent().par.Drag"),
    ("uDt", "parent().par.Dt"),
    ("uNoiseScale", "parent().par.Noisescale"),
    # The noise clock wraps on the host (docs/PARTICLES.md): absTime is float64 in Python.
    ("uTau", "(absTime.seconds * parent().par.Noisespeed.eval()) % 1.0"),
    ("uAttentionFloor", "parent().par.Attentionfloor"),
    ("uPhaseWeight", "op('phase_lag')['w']"),
)


def read(*parts):
    with open(os.path.join(*parts), encoding="utf-8") as f:
        return f.read()


def bind(par, expression):
    par.expr = expression
    par.mode = td.ParMode.EXPRESSION


def place(node, x, y):
    node.nodeX, node.nodeY = x * 200, -y * 150
    return node


def add_parameters(comp):
    bridge = comp.appendCustomPage("Bridge")
    for name, label, default in (("Host", "Host", "127.0.0.1"), ("Prompt", "Prompt", ""), ("Oscprefix", "OSC Prefix", "/daam")):
        p = bridge.appendStr(name, label=label)[0]
        p.default = p.val = default
    for name, label, default, lo, hi in (
        ("Port", "Port (websocket)", 8765, 1, 65535),
        ("Oscport", "OSC In Port", 7000, 1, 65535),
        # Int parameters are signed 32-bit: Seed offers the part of the bridge's range they hold.
        ("Seed", "Seed", 0, *LIMITS.int32_range(LIMITS.LIMITS.seed)),
        ("Steps", "Steps", 20, *LIMITS.int32_range(LIMITS.LIMITS.steps)),
        ("Word", "Word (index)", 0, 0, 76),
    ):
        p = bridge.appendInt(name, label=label)[0]
        p.default = p.val = default
        p.min, p.max, p.clampMin, p.clampMax = lo, hi, True, True
    active = bridge.appendToggle("Active", label="Connected")[0]
    active.default = active.val = True
    for name in ("Generate", "Pause", "Resume", "Cancel"):
        bridge.appendPulse(name, label=name)
    # A self-attention query region in image pixels: x0 = x1 and y0 = y1 is one pixel (docs/CAPTURE.md).
    for name, label in (("Regionx0", "Region X0"), ("Regiony0", "Region Y0"), ("Regionx1", "Region X1"), ("Regiony1", "Region Y1")):
        p = bridge.appendFloat(name, label=label)[0]
        p.default = p.val = 0.0
        p.normMin, p.normMax = 0.0, 512.0
    bridge.appendPulse("Setregion", label="Set Region")
    bridge.appendPulse("Clearregion", label="Clear Region")
    follow = bridge.appendToggle("Followregion", label="Particles Follow Region")[0]
    follow.default = follow.val = False
    # Concepts: any words, comma-separated; Concept picks which one's map the TOP shows (docs/CAPTURE.md).
    p = bridge.appendStr("Concepts", label="Concepts")[0]
    p.default = p.val = ""
    p = bridge.appendInt("Concept", label="Concept (index)")[0]
    p.default = p.val = 0
    p.min, p.max, p.clampMin, p.clampMax = 0, LIMITS.LIMITS.concepts - 1, True, True
    bridge.appendPulse("Setconcepts", label="Set Concepts")
    follow = bridge.appendToggle("Followconcept", label="Particles Follow Concept")[0]
    follow.default = follow.val = False

    law = comp.appendCustomPage("Particles")
    # Defaults of docs/PARTICLES.md (bridge.particles.ParticleParams).
    for name, label, default, hi in (
        ("Attraction", "Attraction", 8.0, 30.0),
        ("Wind", "Wind", 1.5, 5.0),
        ("Drag", "Drag", 0.08, 1.0),
        ("Dt", "Seconds per Update", 1.0 / 60.0, 0.1),
        ("Noisescale", "Noise Scale", 3.0, 10.0),
        ("Noisespeed", "Noise Speed", 0.05, 1.0),
        ("Attentionfloor", "Attention Floor", 0.1, 1.0),
        ("Phasegainnoise", "Phase Weight Noise", 0.0, 1.0),
        ("Phasegainstructure", "Phase Weight Structure", 0.7, 1.0),
        ("Phasegaindetail", "Phase Weight Detail", 1.0, 1.0),
        ("Morphtime", "Morph Time (s)", 0.5, 5.0),
    ):
        p = law.appendFloat(name, label=label)[0]
        p.default = p.val = default
        p.normMin, p.normMax = 0.0, hi
    count = law.appendInt("Particles", label="Particle Count")[0]
    count.default = count.val = 65536
    count.min, count.max, count.clampMin = 1, 1 << 20, True
    law.appendPulse("Reset", label="Scatter Particles")


def text_dat(comp, name, text, x, y):
    dat = place(comp.create(td.textDAT, name), x, y)
    dat.text = text
    return dat


def table_dat(comp, name, rows, x, y):
    table = place(comp.create(td.tableDAT, name), x, y)
    table.clear()
    for row in rows:
        table.appendRow(row)
    return table


def script_top(comp, name, x, y, fmt):
    top = place(comp.create(td.scriptTOP, name), x, y)
    top.par.callbacks = "texture_top"
    top.par.format = fmt
    return top


def build(root=None):
    root = root or td.op("/project1")
    old = root.op(NAME)
    if old is not None:
        old.destroy()
    comp = root.create(td.baseCOMP, NAME)
    add_parameters(comp)

    # Code, straight from the repository.
    text_dat(comp, "daam_frames", read(TD_DIR, "daam_frames.py"), 0, 0)
    text_dat(comp, "ws_callbacks", read(TD_DIR, "ws_callbacks.py"), 0, 1)
    text_dat(comp, "osc_callbacks", read(TD_DIR, "osc_callbacks.py"), 0, 2)
    text_dat(comp, "texture_top", read(TD_DIR, "texture_top.py"), 0, 3)
    text_dat(comp, "particle_step_glsl", read(SHADERS, "prelude_touchdesigner.glsl") + read(SHADERS, "particle_step.glsl"), 0, 4)
    text_dat(comp, "particle_color_glsl", read(TD_DIR, "particle_color.glsl"), 0, 5)
    text_dat(comp, "log", "", 0, 6)

    # What the bridge says.
    table_dat(comp, "bridge_state", [["name", "value"]] + [[k, ""] for k in (
        "connection", "state", "run", "prompt", "step", "total", "phase", "phase_weights", "selected", "error")], 1, 6)
    table_dat(comp, "words", [["index", "word"]], 2, 6)
    table_dat(comp, "word_stats", [["index", "mass", "peak", "x", "y", "spread", "change"]], 3, 6)

    ws = place(comp.create(td.websocketDAT, "bridge_ws"), 1, 0)
    bind(ws.par.netaddress, "parent().par.Host")
    bind(ws.par.port, "parent().par.Port")
    bind(ws.par.active, "parent().par.Active")
    ws.par.callbacks = "ws_callbacks"

    osc = place(comp.create(td.oscinDAT, "bridge_osc"), 1, 2)
    bind(osc.par.port, "parent().par.Oscport")
    osc.par.splitbundle = True  # the bridge sends bundles; one callback per message
    osc.par.callbacks = "osc_callbacks"

    # Textures from the websocket (Script TOPs upload what ws_callbacks stored).
    attention = script_top(comp, "attention_map", 2, 0, "rgba32float")
    script_top(comp, "step_map", 2, 1, "rgba32float")
    preview = script_top(comp, "preview_image", 2, 2, "rgba8fixed")
    region = script_top(comp, "region_map", 2, 3, "rgba32float")  # the first region's self-attention
    concept = script_top(comp, "concept_map", 2, 4, "rgba32float")  # the Concept parameter's concept map
    # What drives the particles: the selected word's cumulative map, the region's or the concept's.
    drive = place(comp.create(td.switchTOP, "particle_attention"), 3, 1)
    for source in (attention, region, concept):
        source.outputConnectors[0].connect(drive)
    bind(drive.par.index, "2 if parent().par.Followconcept else int(parent().par.Followregion)")

    # The particle system: state ping-pongs through a Feedback TOP.
    homes = script_top(comp, "homes", 3, 3, "rgba32float")
    initial = script_top(comp, "initial_state", 3, 4, "rgba32float")
    feedback = place(comp.create(td.feedbackTOP, "state_feedback"), 4, 4)
    initial.outputConnectors[0].connect(feedback)
    step = place(comp.create(td.glslTOP, "particle_step"), 5, 3)
    step.par.pixeldat = "particle_step_glsl"
    step.par.format = "rgba32float"
    for source in (feedback, homes, drive):  # inputs 0, 1, 2 as prelude_touchdesigner.glsl expects
        source.outputConnectors[0].connect(step)
    feedback.par.top = "particle_step"
    for i, (uniform, expression) in enumerate(UNIFORMS):
        step.par[f"vec{i}name"].val = uniform
        bind(step.par[f"vec{i}valuex"], expression)

    # Phase weight: OSC sets the target, the Lag CHOP eases towards it (no hard cuts).
    target = place(comp.create(td.constantCHOP, "phase_target"), 4, 1)
    target.par.const0name = "w"
    target.par.const0value = 0.0
    lag = place(comp.create(td.lagCHOP, "phase_lag"), 5, 1)
    target.outputConnectors[0].connect(lag)
    bind(lag.par.lag1, "parent().par.Morphtime")
    bind(lag.par.lag2, "parent().par.Morphtime")

    # Drawing: one small square per particle, instanced from the state texture.
    colors = place(comp.create(td.glslTOP, "particle_color"), 5, 5)
    colors.par.pixeldat = "particle_color_glsl"
    colors.par.format = "rgba8fixed"
    homes.outputConnectors[0].connect(colors)
    preview.outputConnectors[0].connect(colors)
    geo = place(comp.create(td.geometryCOMP, "particles_geo"), 6, 4)
    for child in list(geo.children):
        child.destroy()
    dot = geo.create(td.rectangleSOP, "dot")
    dot.par.sizex = dot.par.sizey = 0.002
    dot.render = dot.display = True
    geo.par.instancing = True
    geo.par.instanceop = "../particle_step"
    geo.par.instancetx, geo.par.instancety = "r", "g"
    geo.par.instancecolorop = "../particle_color"
    geo.par.instancer, geo.par.instanceg, geo.par.instanceb = "r", "g", "b"
    geo.par.sy = -1  # the particle law's y points down the image
    place(comp.create(td.constantMAT, "particle_mat"), 6, 5)
    geo.par.material = "../particle_mat"
    camera = place(comp.create(td.cameraCOMP, "camera"), 6, 3)
    camera.par.projection = "ortho"
    camera.par.orthowidth = 1.0
    camera.par.tx, camera.par.ty, camera.par.tz = 0.5, -0.5, 5.0
    render = place(comp.create(td.renderTOP, "particles_render"), 7, 4)
    render.par.camera = "camera"
    render.par.geometry = "particles_geo"
    render.par.outputresolution = "custom"
    render.par.resolutionw = render.par.resolutionh = 1024

    # Heat map colours: the attention map looked up in the product's heat ramp (bridge/palette.py).
    keys = table_dat(comp, "heat_ramp_keys", [["pos", "r", "g", "b", "a"]] + [
        [pos, r / 255, g / 255, b / 255, 1] for pos, (r, g, b) in PALETTE.heat_stops()], 6, 0)
    ramp = place(comp.create(td.rampTOP, "heat_ramp"), 6, 1)
    ramp.par.dat = keys.name
    heat = place(comp.create(td.lookupTOP, "heat_colors"), 7, 0)
    attention.outputConnectors[0].connect(heat)
    ramp.outputConnectors[0].connect(heat)

    for name, source, y in (("out_particles", render, 4), ("out_preview", preview, 2), ("out_heat", heat, 0)):
        out = place(comp.create(td.nullTOP, name), 8, y)
        source.outputConnectors[0].connect(out)

    # The Parameter Execute DAT holds its callbacks as its own text.
    watcher = place(comp.create(td.parameterexecuteDAT, "controls"), 1, 7)
    watcher.text = read(TD_DIR, "controls.py")
    watcher.par.op = comp.path
    watcher.par.pars = "*"
    watcher.par.valuechange = True
    watcher.par.onpulse = True
    return comp


built = build()
print(f"attention bridge network built at {built.path} from {REPO}")
