"""The attribution benchmark: its colour segmentation and scoring on known answers, then a small
real sample rendered by the shipped shapes model through the engine."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import attribution as bench  # noqa: E402

from bridge.builtin import shapes_data as sd  # noqa: E402
from bridge.models.resolve import BUILTIN_DIR  # noqa: E402

SHAPES_MODEL = BUILTIN_DIR / "shapes"

# Floors for the 12-prompt sample (the first 12 benchmark prompts).  At its recommended guidance
# (3, from bridge_defaults.json) the shipped model draws all 20 objects of these prompts, every
# prompt complete, with mIoU 0.655 (docs/MODEL.md: 93.0 % and 0.665 over 200 prompts).  The same
# weights at Stable Diffusion's 7.5 score 0.574 here (18 of 20 objects); earlier models: grounded
# by the token loss alone, 0.359 (maps on the objects' centres); ungrounded, 14 of 20 objects at
# 0.277.  A map covering the whole image scores about 0.05 and the random tiny model 0.02.  The
# mIoU floor is the issue's goal: it leaves 0.055 for other CPUs' kernels and fails if the
# default guidance slips back to 7.5 or the model falls back to an earlier level.
SAMPLE_PROMPTS = 12
FLOOR_OBJECTS_DRAWN = 0.85
FLOOR_ACCURACY = 0.8
FLOOR_MIOU = 0.60
# Shapes: 19 of the sample's 20 drawn objects fit their named outline best (72 % over the 200
# benchmark prompts, where stars are the weak shape; the random tiny model: none).
FLOOR_SHAPES = 0.6


def _truth(n=16, seed=5):
    import torch

    scenes = sd.sample_scenes(seed, n)
    # A seeded generator for the colour jitter: left to torch's global one, the result would
    # depend on which tests ran before.
    images, masks = sd.rasterise(scenes, generator=torch.Generator().manual_seed(seed))
    return scenes, sd.to_uint8(images), masks.numpy() > 0.5


def test_colour_segmentation_recovers_drawn_objects():
    scenes, images, masks = _truth()
    ious = []
    for scene, img, m in zip(scenes, images, masks):
        found = bench.object_masks(img, scene)
        for j, f in enumerate(found):
            assert f is not None
            ious.append(bench.iou(f, m[j]))
    # Only the anti-aliased rim is in doubt: a jittered rim pixel's colour may fall either side.
    # On a small square (256 px, about 60 on its rim) that alone costs up to 0.16 IoU; over 200
    # jitter seeds the worst object scored 0.84 and the mean 0.97-0.98.  A segmentation that lost
    # or grew a whole ring of pixels would fall below both bounds.
    assert min(ious) >= 0.75
    assert float(np.mean(ious)) >= 0.95


def test_missing_or_miscoloured_objects_are_not_found():
    scenes, images, _ = _truth(4)
    blank = np.zeros_like(images[0])
    assert all(f is None for f in bench.object_masks(blank, scenes[0]))
    noise = np.random.default_rng(0).integers(0, 256, images[0].shape).astype(np.uint8)
    assert all(f is None for f in bench.object_masks(noise, scenes[0]))


def test_largest_component():
    m = np.zeros((10, 10), bool)
    m[1:3, 1:3] = True  # 4 px
    m[5:9, 5:9] = True  # 16 px
    m[0, 9] = True
    got = bench.largest_component(m)
    assert got.sum() == 16 and got[5:9, 5:9].all()


def test_scoring_known_answers():
    """Maps equal to the true masks score IoU 1; maps of the wrong objects score low."""
    scenes, images, masks = _truth(8, seed=9)
    results = []
    for scene, img, m in zip(scenes, images, masks):
        words = tuple(w for w, _ in scene.pieces)
        maps = np.zeros((len(words), 64, 64), np.float32)
        for j in range(len(scene.objects)):
            maps[bench.word_index(words, scene, j, "shape")] = m[j]
        steps = np.stack([maps * 0.5, maps])  # two steps of a cumulative map
        res = bench.evaluate_run(scene, words, steps, img, 1.0)
        results.append(res)
        assert res.drawn == len(scene.objects)
        assert min(res.iou_noun[0.4]) >= 0.85
        assert len(res.iou_steps[0]) == 2
        if len(scene.objects) > 1:  # swap the first two objects' maps
            swapped = maps.copy()
            a, b = (bench.word_index(words, scene, j, "shape") for j in (0, 1))
            swapped[[a, b]] = maps[[b, a]]
            bad = bench.evaluate_run(scene, words, swapped[None], img, 1.0)
            assert max(bad.iou_noun[0.4][:2]) < 0.1
    summary = bench.summarise(results)
    assert summary["accuracy"] == 1.0 and summary["settled_step"] == 1
    assert summary["shape_accuracy"] == 1.0  # drawn outlines are recognised from their colour masks
    by_shape = summary["shape_accuracy_by_shape"]
    assert set(by_shape) == {o.shape for sc in scenes for o in sc.objects} and set(by_shape.values()) == {1.0}
    counts = summary["by_object_count"]
    assert sum(g["prompts"] for g in counts.values()) == len(scenes)
    assert set(counts) == {str(len(s.objects)) for s in scenes}
    assert all(g["accuracy"] == 1.0 and g["miou_noun_0.4"] >= 0.85 for g in counts.values())
    assert "by objects in the prompt" in bench.format_summary(summary)


@pytest.mark.skipif(not (SHAPES_MODEL / "model_index.json").is_file(), reason="the shapes model is not in this checkout")
def test_shipped_model_size_and_sample_benchmark():
    size = sum(f.stat().st_size for f in SHAPES_MODEL.rglob("*") if f.is_file())
    assert size <= 15e6
    summary, results = bench.run_benchmark(SAMPLE_PROMPTS, "builtin", device="cpu", progress=False)
    assert summary["prompts"] == SAMPLE_PROMPTS
    drawn = summary["objects_drawn"] / summary["objects"]
    assert drawn >= FLOOR_OBJECTS_DRAWN, bench.format_summary(summary)
    assert summary["accuracy"] >= FLOOR_ACCURACY, bench.format_summary(summary)
    assert summary["miou_noun"]["0.4"] >= FLOOR_MIOU, bench.format_summary(summary)
    assert summary["shape_accuracy"] >= FLOOR_SHAPES, bench.format_summary(summary)


# bench/self_attention.py on the first 6 benchmark prompts: a 6 × 6 px box inside each drawn
# object; the share of its self-attention map (all steps, all layers) on its own object.  The
# shipped weights score 0.711 over these 13 objects (docs/MODEL.md: 0.714 over 60 prompts); the
# recipe's weights before their self-attention fine-tune scored 0.14, an even spread 0.05.
SELF_PROMPTS = 6
FLOOR_SELF_SHARE = 0.6


@pytest.mark.skipif(not (SHAPES_MODEL / "model_index.json").is_file(), reason="the shapes model is not in this checkout")
def test_shipped_models_box_self_attention_lies_on_its_object():
    import self_attention

    from bridge.engine import Engine

    engine = Engine.load("builtin", device="cpu", progress=False)
    r = self_attention.measure(engine, SELF_PROMPTS, progress=False)
    assert len(r["shares"]) >= 12  # the objects drawn (13 of 13 here)
    assert float(np.mean(r["shares"])) >= FLOOR_SELF_SHARE, r["shares"]
    assert float(np.mean(r["shares"])) > 8 * float(np.mean(r["areas"]))  # far from an even spread


def test_shape_fit_names_each_drawn_outline_and_calls_a_blob_a_circle():
    import shape_fit

    scenes, _, masks = _truth(40, seed=11)
    for scene, m in zip(scenes, masks):
        for j, obj in enumerate(scene.objects):
            scores = shape_fit.fit(m[j])
            assert max(scores, key=scores.get) == obj.shape, (obj, scores)
            assert scores[obj.shape] >= 0.85
    # A star drawn without its arms: the disc that covers its body.
    yy, xx = np.mgrid[:64, :64] + 0.5
    disc = (yy - 32) ** 2 + (xx - 32) ** 2 <= 7.5 ** 2
    assert shape_fit.classify(disc) == "circle"
    square = (abs(yy - 32) <= 8) & (abs(xx - 32) <= 8)
    assert shape_fit.classify(square) == "square"
    assert shape_fit.fit(np.zeros((64, 64), bool)) == {s: 0.0 for s in sd.SHAPES}


def test_ceiling_of_perfect_attention():
    import attribution_limits as limits

    scenes = bench.sd.sample_scenes(bench.BENCH_SEED, 24)
    both = limits.ceiling_miou(scenes, 0.4)
    fine = limits.ceiling_miou(scenes, 0.4, {16: 1})
    coarse = limits.ceiling_miou(scenes, 0.4, {8: 1})
    # Pooling loses the outlines, and a coarser grid loses more; mixing the grids lands between.
    assert 0.6 < coarse < both < fine < 0.95


@pytest.mark.skipif(not (SHAPES_MODEL / "model_index.json").is_file(), reason="the shapes model is not in this checkout")
def test_step_windows_agree_with_the_benchmark():
    import attribution_limits as limits

    windows, summary = limits.window_mious(3, 0.4, device="cpu")
    assert summary["prompts"] == 3 and summary["objects_drawn"] > 0
    assert set(windows) == set(limits.WINDOWS) | {"min–max"}
    # Summing the per-step maps back up is DAAM's cumulative map: the same score as the benchmark's.
    assert windows["all steps (DAAM)"] == pytest.approx(summary["miou_noun"]["0.4"], abs=0.02)
    assert bench.evaluate_run.__name__ == "evaluate_run"  # the benchmark's own scorer is left alone


def test_minmax_threshold_is_relative_to_the_maps_floor():
    import attribution_limits as limits

    m = np.full((4, 4), 0.5, np.float32)  # a map that never falls below half its peak ...
    m[0, 0] = 1.0
    m[0, 1] = 0.8  # (0.8 − 0.5) / 0.5 = 0.6 after normalising
    # ... is all "on" under Eqn. 7 at τ = 0.4, while min–max keeps only what stands out.
    assert bench.daam_mask(m, 0.4).all()
    assert limits.minmax_mask(m, 0.4).sum() == 2
    assert limits.minmax_mask(m, 0.4)[0, :2].all()


@pytest.mark.skipif(not (SHAPES_MODEL / "model_index.json").is_file(), reason="the shapes model is not in this checkout")
def test_no_mid_block_filter_drops_only_the_mid_block():
    import attribution_limits as limits

    from bridge.attention import LayerFilter
    from bridge.families.unet import cross_attention_modules
    from bridge.engine import Engine

    engine = Engine.load("builtin", device="cpu", progress=False)
    names = [n for n, _ in cross_attention_modules(engine.pipe.unet)]
    keep = LayerFilter(limits.NO_MID_BLOCK)
    kept = [n for n in names if keep.keeps(n, 0)]
    assert len(names) == 7 and len(kept) == 6
    assert all(not n.startswith("mid_block") for n in kept)


DIT_MODEL = BUILTIN_DIR / "shapes-dit"
# builtin:shapes-dit on the same 12 prompts: 20 of 20 objects drawn, 12 of 12 prompts complete,
# mIoU 0.571 (docs/MODEL.md: 91.0 % and 0.620 over 200; these 12 prompts are the hard end of the
# sample).  The floor leaves 0.05 for other CPUs' kernels; keys read from the wrong end of the
# joint sequence (one slice, tried) score 0.17.
FLOOR_DIT_MIOU = 0.52


@pytest.mark.skipif(not (DIT_MODEL / "model_index.json").is_file(), reason="the shapes transformer is not in this checkout")
def test_shipped_transformer_size_and_sample_benchmark():
    size = sum(f.stat().st_size for f in DIT_MODEL.rglob("*") if f.is_file())
    assert size <= 15e6
    summary, _ = bench.run_benchmark(SAMPLE_PROMPTS, "builtin:shapes-dit", device="cpu", progress=False)
    assert summary["objects_drawn"] / summary["objects"] >= FLOOR_OBJECTS_DRAWN, bench.format_summary(summary)
    assert summary["accuracy"] >= FLOOR_ACCURACY, bench.format_summary(summary)
    assert summary["miou_noun"]["0.4"] >= FLOOR_DIT_MIOU, bench.format_summary(summary)


# bench/concept_maps.py on the first 8 benchmark prompts: ConceptAttention's argmax segmentation
# of each scene's shape nouns and "background", then of its colour words and "background".  The
# shipped weights score 0.634 and 0.642 over these 15 objects (docs/MODEL.md: 0.634 and 0.638
# over 100 prompts); the weights before their concept fine-tunes scored 0.131 on the shapes,
# maps that land off their objects (the demo's "circle" on a strip at the top), and the first
# fine-tune, shapes only, 0.296 on the colours (30 prompts).
CONCEPT_PROMPTS = 8
FLOOR_DIT_CONCEPTS = 0.5


@pytest.mark.skipif(not (DIT_MODEL / "model_index.json").is_file(), reason="the shapes transformer is not in this checkout")
def test_shipped_transformers_concept_maps_lie_on_their_objects():
    import concept_maps

    for by in ("shape", "colour"):
        s = concept_maps.run(CONCEPT_PROMPTS, "builtin:shapes-dit", 20, None, "cpu", concept_maps.BENCH_SEED, progress=False, by=by)
        assert s["objects_drawn"] >= s["objects"] - 2, concept_maps.format_summary(s)
        assert s["miou"]["concepts, argmax"] >= FLOOR_DIT_CONCEPTS, concept_maps.format_summary(s)


def test_concept_grid_ceiling_is_exact_at_pixel_grid_and_falls_with_coarser_grids():
    """bench/concept_maps.py's ceiling: perfect maps at the image's own grid segment every drawn
    object exactly; coarser token grids spill past the edges, the coarser the more."""
    import concept_maps

    scenes = sd.sample_scenes(concept_maps.BENCH_SEED, 12)
    fine, mid, coarse = (concept_maps.grid_ceiling(scenes, g) for g in (64, 16, 8))
    assert fine > 0.99 and fine > mid > coarse > 0.5, (fine, mid, coarse)


def test_colour_purity_tells_a_clean_shape_from_a_multicoloured_blob():
    import torch

    import concepts

    scene = sd.Scene((sd.ShapeObject("circle", "green", 32.0, 32.0, 12.0),), "black", False)
    images, _ = sd.rasterise([scene], generator=torch.Generator().manual_seed(0))
    clean = sd.to_uint8(images)[0]
    assert concepts.colour_purity(clean, "green") >= 0.9  # a drawn disc: only its rim is in doubt
    blob = clean.copy()
    blob[:, :36][(clean[:, :36] != clean[0, 0]).any(-1)] = sd.COLOURS["blue"]  # more than its left half blue
    assert 0.2 < concepts.colour_purity(blob, "green") < concepts.CLEAN_PURITY
    assert concepts.colour_purity(np.zeros_like(clean), "green") == 0.0  # nothing drawn
    assert concepts.pair_prompt("orange", "star") == "an orange star"
    assert concepts.lost_pairs({("green", "circle"): [0.1, 0.5, 0.0, 0.2], ("red", "star"): [0.6, 0.5, 0.3, 0.7]}) == [("green", "circle")]


@pytest.mark.skipif(not (SHAPES_MODEL / "model_index.json").is_file(), reason="the shapes model is not in this checkout")
def test_concepts_benchmark_renders_each_pair():
    import concepts

    scores = concepts.run(seeds=1, device="cpu", pairs=[("green", "triangle"), ("yellow", "star")], progress=False)
    assert set(scores) == {("green", "triangle"), ("yellow", "star")}
    # At its default guidance (3) the shipped model loses no pair (bench/concepts.py, 4 seeds:
    # 139 of 140 clean; the recipe's weights before the self-attention fine-tune: 280 of 280 over
    # 8).  "a green triangle" is the pair the recipe's weights lose at Stable Diffusion's 7.5
    # (purity 0.00-0.06 in seeds 0-3), so this also fails if that default is lost.
    assert all(concepts.clean_share(p) == 1.0 for p in scores.values()), scores
