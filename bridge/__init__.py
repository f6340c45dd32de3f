"""Attention bridge: step-wise cross-attention (DAAM) from diffusion models to live visuals.

Light modules (frames, phases, bus, recording, protocol, particles) import only numpy and the
standard library, so replay and the viewer run on a show machine without torch or diffusers.
"""

__version__ = "0.1.0"
