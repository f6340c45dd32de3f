"""Control messages: validation shared by websocket JSON and OSC, one sentence per refusal."""

from __future__ import annotations

import math

import pytest

from bridge.control import ControlError, parse_json_control, parse_osc_control
from bridge.wordstats import STAT_NAMES, StatsTracker, word_stats

import numpy as np


def test_prompt_and_settings_are_typed_and_normalised():
    c = parse_json_control({"type": "prompt", "prompt": "a  red\napple", "seed": 7, "steps": 25.0, "guidance": 5,
                            "size": [512, 384], "negative_prompt": ""})
    assert c.kind == "prompt"
    assert c.values == {"prompt": "a red apple", "seed": 7, "steps": 25, "guidance": 5.0, "width": 512,
                        "height": 384, "negative_prompt": ""}
    assert isinstance(c.values["steps"], int) and isinstance(c.values["guidance"], float)
    assert parse_json_control({"type": "set", "seed": 2**32 - 1}).values == {"seed": 2**32 - 1}


@pytest.mark.parametrize("msg, code, words", [
    ({"type": "prompt"}, "invalid_value", 'needs a "prompt"'),
    ({"type": "prompt", "prompt": ""}, "invalid_value", "empty"),
    ({"type": "prompt", "prompt": "a " * 10_000}, "invalid_value", "10000 words; the limit is 200"),
    ({"type": "prompt", "prompt": "x" * 3000}, "invalid_value", "3000 characters"),
    ({"type": "prompt", "prompt": 42}, "invalid_value", "must be text"),
    ({"type": "set", "steps": -3}, "invalid_value", "steps must be within 1..1000, got -3"),
    ({"type": "set", "steps": 2.5}, "invalid_value", "whole number"),
    ({"type": "set", "steps": True}, "invalid_value", "whole number"),
    ({"type": "set", "guidance": math.nan}, "invalid_value", "finite"),
    ({"type": "set", "guidance": "7"}, "invalid_value", "must be a number"),
    ({"type": "set", "seed": -1}, "invalid_value", "seed must be within"),
    ({"type": "set", "width": 100}, "invalid_value", "multiple of 8"),
    ({"type": "set", "size": [512]}, "invalid_value", "[width, height]"),
    ({"type": "set"}, "invalid_value", "at least one"),
    ({"type": "set", "stpes": 3}, "unknown_field", "did you mean 'steps'"),
    ({"type": "selct", "word": 1}, "unknown_type", "did you mean 'select'"),
    ({"type": "select"}, "invalid_value", "needs a"),
    ({"type": "select", "word": -1}, "invalid_value", "word must be within"),
    ({"type": "preset", "name": 3}, "invalid_value", "preset name"),
    ({"type": "speed", "speed": 0}, "invalid_value", "speed must be within"),
    ({"type": "subscribe", "frames": ["heat"]}, "invalid_value", "unknown type"),
])
def test_refusals_name_the_field(msg, code, words):
    with pytest.raises(ControlError) as info:
        parse_json_control(msg)
    assert info.value.code == code and words in str(info.value)


def test_actions_and_osc_button_values():
    for action in ("pause", "resume", "cancel", "next", "status"):
        assert parse_json_control({"type": action}).kind == action
        assert parse_osc_control(f"/daam/{action}", [1]).kind == action
        assert parse_osc_control(f"/daam/{action}", [0.0]) is None
    assert parse_osc_control("/vj/prompt", ["a cat"], prefix="/vj").values == {"prompt": "a cat"}
    assert parse_osc_control("/daam/speed", [2]).values == {"speed": 2.0}


def test_word_stats_are_bounded_and_locate_the_blob():
    maps = np.zeros((2, 8, 16), np.float32)
    maps[0, 2, 12] = 4.0  # one bright pixel, top right
    maps[1] = 1.0  # uniform
    stats, _ = word_stats(maps, (0.2, 0.8))
    mass, peak, x, y, spread, change = stats[0]
    assert (mass, peak) == pytest.approx((0.2, 1.0))
    assert x == pytest.approx(12.5 / 16) and y == pytest.approx(2.5 / 8) and spread == pytest.approx(0.0)
    assert stats[1][1] == pytest.approx(0.25) and stats[1][2:4] == pytest.approx([0.5, 0.5])
    assert stats[1][4] > 0.25  # a uniform map is spread out
    tracker = StatsTracker()

    class F:  # the two fields the tracker reads
        def __init__(self, m):
            self.run_id, self.maps, self.mass = "r", m, (0.5, 0.5)

    tracker.update(F(maps))
    moved = maps.copy()
    moved[0] = 0
    moved[0, 5, 1] = 4.0
    assert tracker.update(F(moved))[0][STAT_NAMES.index("change")] == pytest.approx(2 / 128)
