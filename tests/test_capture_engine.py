"""Engine requests: validation sentences, model defaults, previews, special tokens, one run at a time."""

import threading

import numpy as np
import pytest

from bridge.bus import Bus
from bridge.engine import GenerationRequest
from bridge.errors import InvalidRequest


@pytest.mark.parametrize(
    "changes,expected",
    [
        ({"prompt": "   "}, "prompt is empty"),
        ({"steps": -3}, "steps must be from 1"),
        ({"steps": 2.5}, "steps must be a whole number"),
        ({"steps": 1000}, "steps must be at most 999 for this model's DDIMScheduler"),
        ({"seed": -1}, "seed must be from 0"),
        ({"guidance": float("inf")}, "guidance must be a number"),
        ({"width": 100}, "width must be a multiple of 8"),
        ({"height": 4}, "height must be from 8"),
        ({"map_size": (0, 10)}, "map height must be from 1"),
        ({"map_size": "wide"}, "map size must be one number or (height, width)"),
        ({"vae_every": -1}, "vae_every must be from 0"),
        ({"layers": ("12",)}, "layer resolution factors must be among 8, 16, 32, 64"),
        ({"layers": ("sideways",)}, "no cross-attention layer matches sideways"),
    ],
)
def test_validation_says_what_is_wrong(tiny_engine, changes, expected):
    req = GenerationRequest(**{"prompt": "a cat", **changes})
    with pytest.raises(InvalidRequest) as err:
        tiny_engine.validate(req)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_defaults_come_from_the_model(tiny_engine):
    req = tiny_engine.validate(GenerationRequest("a cat"))
    assert (req.width, req.height, req.guidance) == (64, 64, 7.5)
    assert req.map_size == (64, 64)  # the 8×8 latent, upsampled to at least 64 on the long side
    assert tiny_engine.validate(GenerationRequest("a cat", width=128, height=64)).map_size == (32, 64)
    assert tiny_engine.validate(GenerationRequest("a cat", map_size=20)).map_size == (20, 20)


def test_vae_every_swaps_in_full_decodes_on_those_steps(tiny_engine, collect):
    def previews(vae_every):
        c = type(collect)()
        tiny_engine.generate(GenerationRequest("a red apple", seed=4, steps=4, vae_every=vae_every), Bus([c]))
        return [f.preview for f in c.frames]

    linear, decoded = previews(0), previews(2)
    same = [np.array_equal(a, b) for a, b in zip(linear, decoded)]
    assert same == [True, False, True, False]  # steps 2 and 4 (1-based) are VAE decodes


def test_include_special_adds_start_end_and_padding(tiny_engine, collect):
    tiny_engine.generate(GenerationRequest("a red apple", steps=1, include_special=True), Bus([collect]))
    start, frame = collect.start, collect.frames[0]
    assert start.words == ("<start>", "a", "red", "apple", "<end>", "<pad>")
    assert frame.maps.shape[0] == 6
    assert all(m > 0 for m in frame.mass) and abs(sum(frame.mass) - 1) < 1e-6
    # the default run over the same prompt has exactly the inner words, with the same maps
    plain = type(collect)()
    tiny_engine.generate(GenerationRequest("a red apple", steps=1), Bus([plain]))
    np.testing.assert_array_equal(plain.frames[0].maps, frame.maps[1:4])


def test_one_generate_at_a_time(tiny_engine):
    entered, release = threading.Event(), threading.Event()

    class Holder:
        def on_step(self, frame):
            entered.set()
            release.wait(30)

    t = threading.Thread(target=tiny_engine.generate, args=(GenerationRequest("a cat", steps=1), Bus([Holder()])))
    t.start()
    try:
        assert entered.wait(60)
        with pytest.raises(InvalidRequest, match="busy"):
            tiny_engine.generate(GenerationRequest("a dog", steps=1), Bus())
    finally:
        release.set()
        t.join(60)
    assert tiny_engine.generate(GenerationRequest("a dog", steps=1), Bus()).status == "completed"


def test_frames_follow_the_request(tiny_engine, collect):
    end = tiny_engine.generate(GenerationRequest("a red apple", steps=5, width=96, height=64), Bus([collect]))
    start, frames = collect.start, collect.frames
    assert [type(e).__name__ for e in collect.events] == ["RunStart"] + ["StepFrame"] * 5 + ["RunEnd"]
    assert len({f.run_id for f in frames} | {start.run_id, end.run_id}) == 1
    assert [f.step for f in frames] == list(range(5)) and all(f.total == 5 for f in frames)
    assert all(a.elapsed < b.elapsed for a, b in zip(frames, frames[1:]))
    assert all(abs(sum(f.phase_weights) - 1) < 1e-9 for f in frames)
    assert frames[0].timestep > frames[-1].timestep
    assert {"step", "capture", "preview"} <= set(frames[0].timings)
    assert end.image.shape == (64, 96, 3) and end.image.dtype == np.uint8


def test_frames_count_the_schedulers_real_iterations(tiny_engine, collect):
    from diffusers import PNDMScheduler

    original = tiny_engine.pipe.scheduler
    tiny_engine.pipe.scheduler = PNDMScheduler.from_config(original.config, skip_prk_steps=True)
    try:
        end = tiny_engine.generate(GenerationRequest("a cat", steps=5), Bus([collect]))
    finally:
        tiny_engine.pipe.scheduler = original
    # PLMS runs one extra model call: 6 frames for 5 steps, and the records say so
    assert end.status == "completed" and end.steps_done == 6
    assert collect.start.steps == 6 and collect.start.extra["requested_steps"] == 5
    assert [(f.step, f.total) for f in collect.frames] == [(i, 6) for i in range(6)]
    assert collect.frames[-1].phase == "detail"


def test_memory_does_not_grow_with_steps(tiny_engine):
    """The number of live tensors is the same at step 3 and at step 30: nothing piles up per step."""
    import gc

    import torch

    counts = {}

    class Counter:
        def on_step(self, frame):
            if frame.step in (3, 30):
                gc.collect()
                counts[frame.step] = sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))

    end = tiny_engine.generate(GenerationRequest("a red apple on a table", steps=32, guidance=7.5), Bus([Counter()]))
    assert end.status == "completed"
    assert counts[3] == counts[30] > 0


def test_abort_ends_a_run_at_the_next_layer_even_inside_self_attention(tiny_engine, collect):
    """A new prompt arriving while step 2's first self-attention layer is about to run ends
    the run before that layer computes anything: no step waits for its cross-attention."""
    from bridge.families.unet import cross_attention_modules

    unet = tiny_engine.pipe.unet
    originals = {name: m.processor for name, m in cross_attention_modules(unet)}
    names = {m: n for n, m in unet.named_modules()}
    target_name, target = next((n, m) for n, m in unet.named_modules() if n.endswith("attn1"))
    ran: list[str] = []
    arrived = [False]

    def record(module, args):  # registered before the engine's points, so it runs first
        ran.append(names[module])
        if module is target and len(collect.frames) == 2:
            arrived[0] = True  # "a new prompt arrives" now

    def record_done(module, args, output):
        ran.append("done " + names[module])

    watched = [m for m in names if type(m).__name__ in ("Attention", "ResnetBlock2D")]
    hooks = [m.register_forward_pre_hook(record) for m in watched] + [target.register_forward_hook(record_done)]
    try:
        end = tiny_engine.generate(GenerationRequest("a red apple", steps=8), Bus([collect]), abort=lambda: arrived[0])
    finally:
        for h in hooks:
            h.remove()
    assert end.status == "cancelled" and end.steps_done == 2
    assert [f.step for f in collect.frames] == [0, 1]  # step 2 was cut short: no frame for it
    assert ran[-1] == target_name  # nothing ran after the layer the prompt arrived at, not even it
    assert ran.count("done " + target_name) == 2  # it ran in steps 0 and 1
    assert type(collect.events[-1]).__name__ == "RunEnd"
    assert {name: m.processor for name, m in cross_attention_modules(unet)} == originals
    assert all(not m._forward_pre_hooks for m in watched)  # every interrupt point removed
    # the engine is free again and runs normally
    assert tiny_engine.generate(GenerationRequest("a cat", steps=2), Bus()).status == "completed"


def test_abort_ends_a_run_inside_the_vae_decode(tiny_engine, collect):
    """The last layers of a run are the VAE's: an abort there ends it too (no final image)."""
    blocks = [m for m in tiny_engine.pipe.vae.decoder.modules() if type(m).__name__ == "ResnetBlock2D"]
    entered = [0]

    def count(module, args):
        entered[0] += 1

    hooks = [m.register_forward_pre_hook(count) for m in blocks]
    try:
        end = tiny_engine.generate(GenerationRequest("a red apple", steps=2, vae_every=0), Bus([collect]),
                                   abort=lambda: entered[0] > 0)
    finally:
        for h in hooks:
            h.remove()
    assert end.status == "cancelled" and end.steps_done == 2 and end.image is None
    assert entered[0] == 1


def test_running_out_of_memory_fails_the_run_with_one_sentence_and_the_engine_runs_again(tiny_engine, caplog):
    """The allocator's failure is simulated at its edge: a layer of step 1 raises MemoryError as
    an allocation would (a real out-of-memory needs a size this machine cannot hold)."""
    unet = tiny_engine.pipe.unet
    calls = []

    def allocate(module, args):
        calls.append(1)
        if len(calls) == 2:  # step 1 (one call per step: CFG runs as one batch)
            raise MemoryError()

    hook = unet.down_blocks[0].register_forward_pre_hook(allocate)
    try:
        end = tiny_engine.generate(GenerationRequest("a red apple", steps=30), Bus())
    finally:
        hook.remove()
    assert end.status == "failed"
    assert end.error == "the cpu ran out of memory for 64×64; choose a smaller size (or fewer self-attention regions)"
    assert "Traceback" not in caplog.text
    assert tiny_engine.generate(GenerationRequest("a cat", steps=1), Bus()).status == "completed"
