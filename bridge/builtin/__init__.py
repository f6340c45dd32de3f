"""Built-in offline models: the CLIP BPE vocabulary, the tiny random model and its maker.

``builtin`` resolves to the trained shapes model when ``bridge/builtin/models/shapes/`` exists,
else to ``builtin:tiny``.  Both are ordinary diffusers folders loaded by the same code as a
user's model.
"""
