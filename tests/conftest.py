"""Shared fixtures.  Heavy ones are session-scoped: a model loads once per test run."""

from __future__ import annotations

import os

import pytest

# One torch thread per test process (and per subprocess it starts) unless told otherwise: the
# test models are tiny, and on a busy 2-core machine a second intra-op thread mostly spins
# waiting for a core (the capture tests ran 10× slower that way).  Set before torch loads.
os.environ.setdefault("OMP_NUM_THREADS", "1")


class Collect:
    """A bus sink that keeps every event it gets, in order."""

    def __init__(self):
        self.events = []

    def on_run_start(self, e):
        self.events.append(e)

    def on_step(self, e):
        self.events.append(e)

    def on_run_end(self, e):
        self.events.append(e)

    @property
    def start(self):
        return self.events[0]

    @property
    def frames(self):
        return [e for e in self.events if type(e).__name__ == "StepFrame"]

    @property
    def end(self):
        return self.events[-1]


@pytest.fixture
def collect():
    return Collect()


@pytest.fixture(scope="session")
def tiny_engine():
    """The shipped tiny built-in model on CPU (a real diffusers folder, random weights)."""
    from bridge.engine import Engine

    return Engine.load("builtin:tiny", device="cpu", progress=False)


@pytest.fixture(scope="session")
def clip_tokenizer(tmp_path_factory):
    """The full 49 408-token CLIP tokenizer derived from the shipped BPE merges."""
    from transformers import CLIPTokenizer

    from bridge.tokenizers.clip_bpe import write_clip_tokenizer

    return CLIPTokenizer.from_pretrained(write_clip_tokenizer(tmp_path_factory.mktemp("clip") / "tokenizer"))
