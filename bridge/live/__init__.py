"""The live bridge behind `serve`: generation worker, OSC control receiver, session wiring."""
