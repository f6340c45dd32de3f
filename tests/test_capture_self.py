"""Self-attention maps of query regions equal an independent eager reference within 1e-4.

The reference hooks every ``attn1``'s to_q / to_k and each transformer's input (for the
layer's h × w; tests/_qk_reference.py's recorder), materialises the full softmax(q·kᵀ/√d) per conditional image and head in
float64, weights the query rows by the region's coverage of the layer grid — coverage computed
here by its own point sampling (4 × 4 per cell, the definition bridge/regions.py documents)
and a winding-number test — averages over heads, upsamples each layer's map bicubically to
the map size, clamps at 0 and sums the layers.  Nothing in it comes from bridge/attention.
"""

from __future__ import annotations

import base64
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _qk_reference import QKRecorder, reference_coverage
from bridge.attention import Aggregator, AttentionCapture, map_words
from bridge.attention.selfagg import SelfAggregator
from bridge.bus import Bus
from bridge.engine import GenerationRequest
from bridge.families import UNetFamily
from bridge.regions import RegionError, from_dict, from_text, parse_list

PROMPT = "a red apple on a wooden table"


def reference_maps(rec: QKRecorder, specs, cfg: bool, image_hw, map_hw) -> list[np.ndarray]:
    out, start = [], 0
    for end in rec.boundaries:
        total = torch.zeros(len(specs), *map_hw, dtype=torch.float64)
        for call in rec.calls[start:end]:
            q, k, heads, (h, w) = call["q"], call["k"], call["heads"], call["hw"]
            b, d = q.shape[0], q.shape[-1] // heads
            rows = range(b // 2, b) if cfg else range(b)
            weights = torch.from_numpy(np.stack([reference_coverage(s, h, w, image_hw) for s in specs]))
            layer = torch.zeros(len(specs), h * w, dtype=torch.float64)
            for i in rows:
                for head in range(heads):
                    qh, kh = q[i, :, head * d:(head + 1) * d], k[i, :, head * d:(head + 1) * d]
                    layer += weights @ torch.softmax(qh @ kh.T / math.sqrt(d), dim=-1) / heads
            up = F.interpolate(layer.reshape(1, len(specs), h, w), size=map_hw, mode="bicubic", align_corners=False)[0]
            total += up.clamp(min=0)
        out.append(total.numpy())
        start = end
    return out


def disc_mask(side: int, cx: float, cy: float, r: float) -> dict:
    """A mask region's JSON: a disc on a side × side mask, bits packed by hand (MSB first)."""
    bits = [int((x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2 <= r * r) for y in range(side) for x in range(side)]
    packed = bytes(sum(b << (7 - k) for k, b in enumerate(bits[i:i + 8])) for i in range(0, len(bits), 8))
    return {"size": [side, side], "bits": base64.b64encode(packed).decode()}


SPECS = [{"id": "box", "box": [10, 14, 30, 40]}, {"id": "dot", "pixel": [50.5, 9.0]},
         {"id": "tri", "polygon": [[4, 60], [60, 60], [32, 30]]},
         {"id": "disc", "mask": disc_mask(20, 13.0, 7.0, 5.0)}]


def _direct(pipe, specs, guidance, width, height, map_hw, steps=2):
    words = map_words(pipe.tokenizer, PROMPT)
    cfg = guidance > 1
    regions = parse_list(specs, from_dict)
    agg = Aggregator(words.token_indices, 77, (height // 8, width // 8), map_hw, cfg, "cpu")
    regional = SelfAggregator((height, width), map_hw, "cpu")
    regional.set_regions(regions)
    ours = []
    with QKRecorder(pipe.unet, "attn1") as rec, AttentionCapture(UNetFamily(pipe)) as cap:
        cap.begin(agg, regional)

        def on_step_end(_p, i, t, kw):
            agg.end_step()
            ours.append(regional.end_step().numpy().copy())
            rec.mark_step()
            return kw

        with torch.no_grad():
            pipe(PROMPT, num_inference_steps=steps, guidance_scale=guidance, width=width, height=height,
                 generator=torch.Generator().manual_seed(4), output_type="latent", callback_on_step_end=on_step_end)
    return ours, reference_maps(rec, specs, cfg, (height, width), map_hw)


@pytest.mark.parametrize("guidance,width,height,map_hw", [
    (7.5, 64, 64, (64, 64)),  # CFG, square
    (0.0, 64, 64, (32, 32)),  # guidance off: every row is conditional
    (7.5, 96, 64, (48, 72)),  # non-square latent 8×12
])
def test_region_maps_equal_the_eager_reference(tiny_engine, guidance, width, height, map_hw):
    specs = SPECS if width == 64 else [*SPECS[:2], SPECS[3], {"id": "wide", "box": [40, 8, 90, 56]}]
    ours, ref = _direct(tiny_engine.pipe, specs, guidance, width, height, map_hw)
    assert len(ours) == len(ref) == 2
    for got, want in zip(ours, ref):
        assert got.shape == want.shape == (len(specs), *map_hw)
        assert np.abs(got - want).max() < 1e-4
        assert got.min() >= 0 and (got.reshape(len(specs), -1).max(axis=1) > 0).all()


def test_a_region_changes_the_map_and_regions_differ(tiny_engine):
    ours, _ = _direct(tiny_engine.pipe, SPECS, 7.5, 64, 64, (16, 16), steps=1)
    box, dot, tri, disc = ours[0]
    assert np.abs(box - dot).max() > 1e-3 and np.abs(box - tri).max() > 1e-3 and np.abs(disc - box).max() > 1e-3


def test_regions_leave_the_image_bit_identical_and_frames_carry_them(tiny_engine, collect):
    import torch as t

    req = GenerationRequest(PROMPT, seed=9, steps=3, guidance=7.5, regions=parse_list(SPECS, from_dict))
    with t.no_grad():
        plain = tiny_engine.pipe(PROMPT, num_inference_steps=3, guidance_scale=7.5, width=64, height=64,
                                 generator=t.Generator("cpu").manual_seed(9), output_type="np").images[0]
    end = tiny_engine.generate(req, Bus([collect]))
    assert end.status == "completed"
    np.testing.assert_array_equal(end.image, np.clip(np.rint(plain * 255), 0, 255).astype(np.uint8))
    for frame in collect.frames:
        assert frame.kinds["self"].shape == (4, *collect.start.map_size) and frame.kinds["self"].dtype == np.float16
        assert [r["id"] for r in frame.regions] == ["box", "dot", "tri", "disc"]
    without = Collect()
    tiny_engine.generate(GenerationRequest(PROMPT, seed=9, steps=1, guidance=7.5), Bus([without]))
    assert "self" not in without.frames[0].kinds and without.frames[0].regions == ()


class Collect:
    def __init__(self):
        self.frames = []

    def on_step(self, frame):
        self.frames.append(frame)


def test_regions_may_change_between_steps(tiny_engine):
    """The engine asks its regions source at every step start: a step uses the regions it began with."""
    frames = Collect()
    asked = []
    first, second = parse_list(SPECS[:1], from_dict), parse_list(SPECS[1:3], from_dict)

    def regions():
        asked.append(1)
        return first if len(asked) <= 2 else second  # asked before step 0, then at the end of each step

    tiny_engine.generate(GenerationRequest(PROMPT, steps=4), Bus([frames]), regions=regions)
    assert [[r["id"] for r in f.regions] for f in frames.frames] == [["box"], ["box"], ["dot", "tri"], ["dot", "tri"]]
    assert [f.kinds["self"].shape[0] for f in frames.frames] == [1, 1, 2, 2]


@pytest.mark.parametrize("spec, message", [
    ("box:1,2,3", "a box region takes 4 numbers"),
    ("pixel:a,b", "numbers separated by commas"),
    ("ring:1,2", "a region is pixel:X,Y"),
    ("polygon:1,1,2,2", "3 to 64 points"),
    ("box:0,0,9999,10", "image pixels within 0..2048"),
    ("mask:4x4:AAA=", "mask region r0 is empty"),
    ("mask:4x4:////", "has 2 bytes of bits, got 3"),
    ("mask:4x4:!!", "not valid base64"),
    ("mask:300x4:AA==", "1 to 256 pixels on each side"),
    ("mask:4by4:AA==", "mask:WxH:BASE64"),
])
def test_bad_region_text_is_one_sentence(spec, message):
    with pytest.raises(RegionError, match=message):
        from_text(spec)


def test_a_mask_region_survives_json_and_text_and_reads_from_an_image_file(tmp_path):
    from PIL import Image

    from bridge.regions import from_cli_text

    region = from_dict({"id": "disc", "mask": disc_mask(20, 13.0, 7.0, 5.0)})
    assert from_dict(region.to_dict()) == region
    assert from_text(f"mask:20x20:{region.to_dict()['mask']['bits']}").mask_array().tolist() == region.mask_array().tolist()
    picture = np.zeros((40, 40), np.uint8)
    picture[10:20, 20:40] = 255  # white: in
    Image.fromarray(picture).save(tmp_path / "m.png")
    mask = from_cli_text(f"mask:{tmp_path / 'm.png'}").mask_array()
    assert mask.shape == (40, 40) and mask.sum() == 200 and mask[10:20, 20:40].all()
    big = np.zeros((600, 300, 4), np.uint8)
    big[:300, :, 3] = 255  # alpha decides when there is one; scaled down to 256 on the long side
    Image.fromarray(big).save(tmp_path / "big.png")
    mask = from_cli_text(f"mask:{tmp_path / 'big.png'}").mask_array()
    assert mask.shape == (256, 128) and mask[:120].all() and not mask[136:].any()
    with pytest.raises(RegionError, match="cannot read the mask image"):
        from_cli_text(f"mask:{tmp_path / 'missing.png'}")
    with pytest.raises(RegionError, match="mask:WxH:BASE64"):  # other doors never read files
        from_text(f"mask:{tmp_path / 'm.png'}")


def test_region_lists_are_bounded_and_ids_unique():
    with pytest.raises(RegionError, match="at most 8 regions"):
        parse_list([f"pixel:{i},{i}" for i in range(9)], from_text)
    with pytest.raises(RegionError, match="ids must differ"):
        parse_list([{"id": "a", "pixel": [1, 1]}, {"id": "a", "pixel": [2, 2]}], from_dict)
    with pytest.raises(RegionError, match="exactly one of"):
        from_dict({"box": [0, 0, 1, 1], "pixel": [0, 0]})


def test_a_region_outside_the_image_is_refused_before_the_run(tiny_engine):
    with pytest.raises(RegionError, match="reaches outside the 64×64 image"):
        tiny_engine.validate(GenerationRequest(PROMPT, steps=1, regions=(from_text("box:10,10,100,20"),)))
