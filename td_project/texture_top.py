"""Script TOP callbacks shared by the component's Script TOPs (docs.derivative.ca/ScriptTOP_Class).

Each Script TOP uploads what its name asks for:
  step_map, attention_map, preview_image   the latest texture stored by ws_callbacks.py
  homes          particle homes on a jittered grid (RGBA32F: home.xy)
  initial_state  scattered particles, zero velocity (RGBA32F: pos.xy, vel.xy) — the
                 Feedback TOP's input, used again on every reset
Textures from the wire are already flipped for TouchDesigner by daam_frames.py.
"""

import math

import numpy as np


def particle_side(comp):
    return max(1, math.ceil(math.sqrt(int(comp.par.Particles.eval()))))


def onSetupParameters(scriptOp):
    return


def onPulse(par):
    return


def onCook(scriptOp):
    comp = scriptOp.parent()
    frames = comp.op("daam_frames").module
    name = scriptOp.name
    if name == "homes":
        texture = frames.grid_homes(particle_side(comp), seed=0)
    elif name == "initial_state":
        texture = frames.scattered_state(particle_side(comp), seed=int(comp.fetch("scatter_seed", 1)))
    else:
        texture = comp.fetch(name, None)
    if texture is None:  # nothing received yet: a black pixel keeps the network cooking
        texture = np.zeros((1, 1, 4), np.float32)
    scriptOp.copyNumpyArray(texture)
    return
