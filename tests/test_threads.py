"""torch's CPU threads: one fewer than the usable cores unless asked (bridge/threads.py)."""

import os

import pytest

from bridge.threads import choose_threads, usable_cores


@pytest.mark.parametrize("cores, expected", [(1, 1), (2, 1), (8, 7), (64, 63)])
def test_auto_leaves_one_core_free(cores, expected):
    assert choose_threads(0, cores=cores) == expected


def test_an_asked_number_is_kept():
    assert choose_threads(3, cores=2) == 3


def test_usable_cores_honours_affinity_and_a_cgroup_quota(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("max 100000\n")
    assert usable_cores(cpu_max) == affinity
    cpu_max.write_text("50000 100000\n")  # half a core: still one
    assert usable_cores(cpu_max) == 1
    assert usable_cores(tmp_path / "missing") == affinity


def test_loading_a_model_sets_torch_threads():
    import torch

    from bridge.engine import Engine

    before = torch.get_num_threads()
    try:
        Engine.load("builtin:tiny", progress=False, threads=1)
        assert torch.get_num_threads() == 1
        Engine.load("builtin:tiny", progress=False)
        assert torch.get_num_threads() == choose_threads(0)
    finally:
        torch.set_num_threads(before)
