"""The procedural shapes data: seeded scenes, captions that name what is drawn, masks by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bridge.builtin import shapes_data as sd


def test_same_seed_same_scenes_other_seed_other_scenes():
    a, b, c = sd.sample_scenes(7, 20), sd.sample_scenes(7, 20), sd.sample_scenes(8, 20)
    assert a == b
    assert [s.caption for s in a] != [s.caption for s in c]
    g = [torch.Generator().manual_seed(1) for _ in range(2)]
    assert torch.equal(sd.rasterise(a, generator=g[0])[0], sd.rasterise(b, generator=g[1])[0])


def test_scenes_are_valid_by_construction():
    for scene in sd.sample_scenes(3, 300):
        objs = scene.objects
        assert 1 <= len(objs) <= sd.MAX_OBJECTS
        assert len({o.shape for o in objs}) == len(objs) and len({o.colour for o in objs}) == len(objs)
        assert scene.background not in {o.colour for o in objs}
        for i, o in enumerate(objs):
            assert o.radius <= o.cx <= scene.size - o.radius and o.radius <= o.cy <= scene.size - o.radius
            for p in objs[i + 1:]:
                assert math.hypot(o.cx - p.cx, o.cy - p.cy) >= o.radius + p.radius
        # A prompt that names no background means black.
        assert scene.name_background or scene.background == "black"


def test_caption_names_every_object_with_its_colour():
    objs = (sd.ShapeObject("circle", "red", 10, 10, 8), sd.ShapeObject("star", "orange", 40, 40, 9),
            sd.ShapeObject("cross", "blue", 20, 50, 8))
    assert sd.caption(objs[:1]) == "a red circle"
    assert sd.caption(objs[:2], "gray") == "a red circle and an orange star on a gray background"
    assert sd.caption(objs) == "a red circle, an orange star and a blue cross"
    pieces = sd.caption_pieces(objs)
    assert [(w, j) for w, j in pieces if j >= 0] == [("red", 0), ("circle", 0), ("orange", 1), ("star", 1), ("blue", 2), ("cross", 2)]
    assert sd.caption(objs, "gray", nouns_only=True) == "circle, star and cross"
    assert sd.Scene(objs[:2], "gray", True, nouns_only=True).pieces == [("circle", 0), ("and", -1), ("star", 1)]


def test_rasterised_masks_are_the_drawn_objects():
    scenes = sd.sample_scenes(11, 24)
    images, masks = sd.rasterise(scenes, generator=torch.Generator().manual_seed(0))
    assert images.shape == (24, 3, 64, 64) and masks.shape == (24, sd.MAX_OBJECTS, 64, 64)
    assert images.min() >= -1 and images.max() <= 1
    rgb = sd.to_uint8(images).astype(int)
    for scene, img, m in zip(scenes, rgb, masks.numpy()):
        assert (m.sum(0) <= 1.0 + 1e-6).all(), "objects overlap"
        for j, obj in enumerate(scene.objects):
            inside = m[j] >= 1.0  # fully covered pixels
            assert inside.sum() > 40
            # Pixels inside a mask have the object's colour, up to the jitter (+1 for rounding).
            err = np.abs(img[inside] - np.array(sd.COLOURS[obj.colour])).max()
            assert err <= sd.COLOUR_JITTER + 1
        assert not m[len(scene.objects):].any(), "unused slots must be empty"


@pytest.mark.parametrize("shape,expected", [
    ("circle", math.pi),
    ("square", (2 * 0.9 / math.sqrt(2)) ** 2),
    ("triangle", 3 * math.sqrt(3) / 4),
    ("star", 5 * 1.0 * 0.45 * math.sin(math.pi / 5)),
])
def test_outline_areas_match_geometry(shape, expected):
    # Area of the rasterised shape of outer radius 1 (in units of r²) vs the polygon's area.
    scene = sd.Scene((sd.ShapeObject(shape, "red", 32, 32, 20.0),), "black", True)
    _, masks = sd.rasterise([scene])
    area = masks[0, 0].sum().item() / 20.0**2
    assert area == pytest.approx(expected, rel=0.03)


def test_outline_radius_hits_vertices():
    ang, rad = sd._outline("star")
    got = sd.outline_radius("star", torch.tensor(ang + 1e-6, dtype=torch.float64))
    assert np.allclose(got.numpy(), rad, atol=1e-4)
