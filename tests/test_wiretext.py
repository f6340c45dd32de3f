"""Text off the wire: what may be kept, and how much of it an answer repeats."""

from __future__ import annotations

import json

import pytest

from bridge.protocol import ProtocolError, decode_json, error_message
from bridge.wiretext import ECHO_CHARS, MAX_DEPTH, find_unencodable, quote, word_list


def test_quote_clips_to_the_echo_limit_and_says_the_full_length():
    assert quote("cat") == "'cat'"
    long = quote("z" * 5000)
    assert long.startswith("'" + "z" * ECHO_CHARS + "'…") and long.endswith("(5000 characters)")
    assert len(long) < ECHO_CHARS + 30
    assert quote(["a"] * 100).endswith("characters)")  # non-text values by their repr


def test_quote_of_a_lone_surrogate_can_be_sent():
    shown = quote("a\ud800b")
    shown.encode("utf-8")  # would raise if the surrogate came through
    assert "\\ud800" in shown


def test_find_unencodable_looks_everywhere_without_recursion():
    assert find_unencodable({"type": "set", "prompt": "a cat", "x": [1, {"y": "é😀"}]}) is None
    for doc in ({"type": "\ud800"}, {"\udfff": 1}, {"a": [[["\ud83d"]]]}, ["ok", "\ud800"]):
        assert "lone UTF-16 surrogate" in find_unencodable(doc)
    deep = current = []
    for _ in range(100_000):  # far deeper than Python's recursion limit
        current.append([])
        current = current[0]
    assert "nested more than" in find_unencodable(deep)


@pytest.mark.parametrize("depth, refused", [(MAX_DEPTH - 1, False), (MAX_DEPTH, True), (100_000, True)])
def test_decode_json_counts_nesting_from_the_message_itself(depth, refused):
    # the message object is level 1, so its field may nest MAX_DEPTH - 1 more
    text = '{"type":"set","v":' + "[" * depth + "]" * depth + "}"
    if refused:
        with pytest.raises(ProtocolError, match="nested more than"):
            decode_json(text)
    else:
        assert decode_json(text)["type"] == "set"


def test_error_messages_are_clipped_and_encodable():
    message = error_message("x", "bad " + "q" * 10_000 + "\ud800")["message"]
    assert len(message) <= 600 and message.endswith("…")
    json.dumps(message, ensure_ascii=False).encode("utf-8")


def test_word_list_keeps_the_last_word_and_the_count():
    words = [f"w{i}" for i in range(100)]
    text = word_list(words, limit=50)
    assert text.startswith("w0 w1") and "w99" in text and "(100 words)" in text and len(text) < 90
    assert word_list(["a", "b"]) == "a b"
