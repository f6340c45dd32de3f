"""Tokenizer data the runtime and the built-in models share (CLIP's BPE merges and vocabulary)."""
