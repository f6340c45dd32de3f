"""The focus rule (bridge/wordpick.py): the word a run starts on, for every client."""

from __future__ import annotations

import pytest

from bridge.builtin.shapes_data import SHAPES
from bridge.wordpick import STOP_WORDS, focus_index


@pytest.mark.parametrize("prompt, word", [
    ("a yellow star and a green circle", "star"),  # a noun the built-in model knows wins
    ("a red circle above a blue square", "circle"),
    ("green triangle left of a yellow star", "triangle"),
    ("two crosses and a star", "crosses"),  # plurals count
    ("a red apple on a wooden table", "red"),  # no known noun: the first content word
    ("the cat", "cat"),
    ("an owl, at night", "owl"),
    ("on the table", "table"),
    (", a cat", "cat"),  # punctuation is never the focus
    ("A Yellow STAR", "STAR"),
])
def test_the_focus_is_the_first_known_noun_else_the_first_content_word(prompt, word):
    words = prompt.replace(",", " ,").split() if not prompt.startswith(",") else [",", "a", "cat"]
    assert words[focus_index(words)] == word


@pytest.mark.parametrize("words", [(), ("a",), ("and", "the", "of")])
def test_stop_words_only_or_nothing_falls_back_to_the_first_word(words):
    assert focus_index(words) == 0


def test_never_an_article_conjunction_or_preposition():
    for stop in ("a", "an", "the", "and", "or", "but", "of", "on", "above", "below", "with", "in", "at", "over"):
        assert stop in STOP_WORDS
        assert focus_index([stop, "glow"]) == 1


def test_every_shape_of_the_built_in_model_is_a_noun():
    for shape in SHAPES:
        assert focus_index(["a", "big", shape]) == 2
