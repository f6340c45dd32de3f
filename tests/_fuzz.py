"""How much the fuzzers try, in one place.

CI runs each fuzzer's own seeded count (a few thousand inputs in all, the same every run:
``derandomize``).  ``BRIDGE_FUZZ_SCALE=20 python -m pytest tests/test_fuzz.py tests/test_ws_edge.py``
multiplies every count, for the long run README's Benchmarks section reports.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

SCALE = float(os.environ.get("BRIDGE_FUZZ_SCALE", "1"))


def fuzz_settings(examples: int):
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
