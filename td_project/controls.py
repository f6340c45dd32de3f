"""Parameter Execute DAT callbacks (the DAT ``controls``): the component's parameters → bridge.

Signatures are TouchDesigner's (docs.derivative.ca/Parameter_Execute_DAT).  Control messages
go back over the WebSocket DAT as JSON (docs/PROTOCOL.md §2).
"""

import json


def send(comp, message):
    sent = comp.op("bridge_ws").sendText(json.dumps(message))
    if sent is not None and sent < 0:  # sendText returns a negative count on error
        log(comp, "could not send to the bridge: is it running, and are Host and Port right?")
    return message


def log(comp, text):
    comp.op("log").write(text + "\n")
    print("attention bridge:", text)


def reset_particles(comp):
    comp.store("scatter_seed", int(comp.fetch("scatter_seed", 1)) + 1)
    for name in ("homes", "initial_state"):
        comp.op(name).cook(force=True)
    comp.op("state_feedback").par.resetpulse.pulse()


def onValueChange(par, prev):
    comp = par.owner
    if par.name == "Word":
        index = int(par.eval())
        if comp.fetch("selected", None) != index:  # not an echo of the bridge's own selection
            comp.store("selected", index)
            send(comp, {"type": "select", "word": index})
    elif par.name == "Particles":
        reset_particles(comp)
    elif par.name == "Concept":  # show another concept of the maps already here
        maps = comp.fetch("concept_maps", None)
        if maps is not None and len(maps):
            comp.store("concept_map", comp.op("daam_frames").module.map_texture(maps, int(par.eval())))
            comp.op("concept_map").cook(force=True)
    return


def onPulse(par):
    comp = par.owner
    if par.name == "Generate":
        prompt = " ".join(str(comp.par.Prompt.eval()).split())
        if not prompt:
            log(comp, "type a prompt in the Prompt parameter first")
            return
        send(comp, {"type": "prompt", "prompt": prompt, "seed": int(comp.par.Seed.eval()), "steps": int(comp.par.Steps.eval())})
    elif par.name in ("Pause", "Resume", "Cancel"):
        send(comp, {"type": par.name.lower()})
    elif par.name == "Setregion":
        x0, y0, x1, y1 = (float(getattr(comp.par, n).eval()) for n in ("Regionx0", "Regiony0", "Regionx1", "Regiony1"))
        region = {"id": "td", "pixel": [x0, y0]} if (x0, y0) == (x1, y1) else {"id": "td", "box": [x0, y0, x1, y1]}
        send(comp, {"type": "regions", "regions": [region]})
    elif par.name == "Clearregion":
        send(comp, {"type": "regions", "regions": []})
    elif par.name == "Setconcepts":  # "sky, circle, background"; empty clears them
        names = [n.strip() for n in str(comp.par.Concepts.eval()).split(",") if n.strip()]
        send(comp, {"type": "concepts", "concepts": names})
    elif par.name == "Reset":
        reset_particles(comp)
    return
