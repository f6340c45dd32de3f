"""OSC In DAT callbacks (the DAT ``bridge_osc``, Split Bundle into Messages on).

Signature is TouchDesigner's (docs.derivative.ca/OscinDAT_Class).  The address space is
docs/PROTOCOL.md §3.  Writes into the component made by build_network.py:
  bridge_state  Table DAT name/value    words  Table DAT index/word
  word_stats    Table DAT index, mass, peak, x, y, spread, change
  phase_target  Constant CHOP (channel w), smoothed by the Lag CHOP phase_lag into the shader
  state_feedback  Feedback TOP, reset at every run start so particles scatter again
"""

STATS = ("mass", "peak", "x", "y", "spread", "change")
STATUS = {0: "completed", 1: "cancelled", 2: "failed"}
PHASES = {0: "noise", 1: "structure", 2: "detail"}


def set_state(comp, name, value):
    table = comp.op("bridge_state")
    if table[name, 1] is None:
        table.appendRow([name, value])
    else:
        table[name, 1] = value


def phase_weight(comp, weights):
    """w = gain · (noise, structure, detail) weights (docs/PARTICLES.md, "Phase weight")."""
    gains = (comp.par.Phasegainnoise.eval(), comp.par.Phasegainstructure.eval(), comp.par.Phasegaindetail.eval())
    return sum(float(g) * float(x) for g, x in zip(gains, weights))


def on_run_start(comp, args):
    names = ("steps", "seed", "width", "height", "words", "map_h", "map_w")
    for name, value in zip(names, args):
        set_state(comp, name, value)
    set_state(comp, "state", "running")
    comp.op("phase_target").par.const0value = 0.0
    comp.op("state_feedback").par.resetpulse.pulse()


def on_words(comp, args):
    table = comp.op("words")
    table.clear(keepFirstRow=True)
    for i, word in enumerate(args):
        table.appendRow([i, word])
    stats = comp.op("word_stats")
    stats.clear(keepFirstRow=True)
    for i in range(len(args)):
        stats.appendRow([i] + [0.0] * len(STATS))


def on_selected(comp, args):
    index = int(args[0])
    comp.store("selected", index)  # the controls skip echoing this back to the bridge
    set_state(comp, "selected", index)
    if int(comp.par.Word.eval()) != index:
        comp.par.Word = index


def on_phase_weights(comp, args):
    weights = [float(a) for a in args[:3]]
    set_state(comp, "phase_weights", " ".join(f"{w:.3f}" for w in weights))
    comp.op("phase_target").par.const0value = phase_weight(comp, weights)


def on_word(comp, index, args):
    stats = comp.op("word_stats")
    row = index + 1
    while stats.numRows <= row:
        stats.appendRow([stats.numRows - 1] + [0.0] * len(STATS))
    for name, value in zip(STATS, args):
        stats[row, name] = float(value)


HANDLERS = {
    "/run/start": on_run_start,
    "/run/prompt": lambda comp, args: set_state(comp, "prompt", args[0]),
    "/words": on_words,
    "/selected": on_selected,
    "/step": lambda comp, args: (set_state(comp, "step", int(args[0]) + 1), set_state(comp, "total", int(args[1]))),
    "/phase": lambda comp, args: set_state(comp, "phase", PHASES.get(int(args[0]), args[0])),
    "/phase/name": lambda comp, args: set_state(comp, "phase", args[0]),
    "/phase/weights": on_phase_weights,
    "/run/end": lambda comp, args: set_state(comp, "state", STATUS.get(int(args[1]), args[1])),
    "/run/status": lambda comp, args: set_state(comp, "state", args[0]),
    "/error": lambda comp, args: set_state(comp, "error", " ".join(str(a) for a in args)),
}


def onReceiveOSC(dat, rowIndex, message, bytes, timeStamp, address, args, peer):
    comp = dat.parent()
    prefix = comp.par.Oscprefix.eval().rstrip("/")
    if not address.startswith(prefix + "/"):
        return
    tail = address[len(prefix):]
    args = list(args)
    try:
        if tail.startswith("/word/"):
            on_word(comp, int(tail[len("/word/"):]), args)
        elif tail in HANDLERS:
            HANDLERS[tail](comp, args)
    except (IndexError, ValueError, TypeError):
        comp.op("log").write(f"unexpected arguments for {address}: {args!r}\n")
    return
