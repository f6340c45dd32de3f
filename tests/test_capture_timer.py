"""The capture timer (benchmarks): every layer's capture work, the step end and the host transfer, per step."""

from __future__ import annotations

import numpy as np

from bridge.attention.timer import CaptureTimer
from bridge.bus import Bus
from bridge.engine import GenerationRequest


def test_the_timer_sees_every_layer_each_step_and_changes_nothing(tiny_engine, collect):
    req = tiny_engine.validate(GenerationRequest("a red apple on a table", seed=2, steps=3))
    plain = tiny_engine.generate(req, Bus())
    timer = CaptureTimer("cpu")
    tiny_engine.capture_timer = timer
    try:
        bus = Bus()
        bus.add(collect)
        timed = tiny_engine.generate(req, bus)
    finally:
        tiny_engine.capture_timer = None
    assert np.array_equal(plain.image, timed.image)
    layers = {site.name for site in tiny_engine.family.attention_sites()}
    assert len(timer.steps) == 3 and len(layers) > 1
    for step, frame in zip(timer.steps, collect.frames):
        assert set(step) == layers | {"step end: aggregation", "host transfer (maps and preview)"}
        assert all(seconds > 0 for seconds in step.values())
        assert sum(step.values()) < frame.timings["step"] + frame.timings["capture"] + frame.timings["preview"]
    # off again: the next run records nothing more
    tiny_engine.generate(req, Bus())
    assert len(timer.steps) == 3
