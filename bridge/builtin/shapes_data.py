"""Procedural captioned images of coloured shapes, with every object's mask known by construction.

A scene is one to three non-overlapping shapes (distinct shapes, distinct colours) on a plain
background, captioned like ``"a red circle and a blue square on a gray background"``.  When the
background is black the phrase is sometimes left out, so a prompt that names no background means
black.  Scenes are sampled on the CPU with a seeded ``numpy`` generator (cheap: a few centres and
radii) and rasterised in batches with ``torch`` on any device, so training on a GPU is not held
up by drawing.

Every shape is a polygon that is star-shaped around its centre (a circle is the limit), so one
rasteriser serves them all: a pixel is inside when its distance from the centre is below the
outline's radius along the same direction.  Edges are anti-aliased over one pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

IMAGE_SIZE = 64

# Colours far apart in RGB so that colour segmentation of a generated image is unambiguous.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (40, 190, 60),
    "blue": (40, 80, 235),
    "yellow": (240, 220, 40),
    "purple": (150, 50, 210),
    "orange": (250, 140, 20),
    "white": (240, 240, 240),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (10, 10, 10),
    "gray": (120, 120, 120),
    "white": (240, 240, 240),
}
SHAPES = ("circle", "square", "triangle", "star", "cross")

MAX_OBJECTS = 3
MIN_RADIUS, MAX_RADIUS = 8.0, 14.0  # outer radius in pixels at IMAGE_SIZE
COLOUR_JITTER = 12  # per-channel ± noise, so colours are classes rather than exact values
P_NAME_BLACK_BACKGROUND = 0.5


@dataclass(frozen=True)
class ShapeObject:
    shape: str
    colour: str
    cx: float  # centre, pixels from the left
    cy: float  # centre, pixels from the top
    radius: float  # outer radius, pixels

    @property
    def words(self) -> tuple[str, str]:
        return (self.colour, self.shape)


@dataclass(frozen=True)
class Scene:
    objects: tuple[ShapeObject, ...]
    background: str
    name_background: bool
    size: int = IMAGE_SIZE
    nouns_only: bool = False  # caption names the shapes only ("star and circle"): see caption_pieces

    @property
    def caption(self) -> str:
        return caption(self.objects, self.background if self.name_background else None, self.nouns_only)

    @property
    def pieces(self) -> list[tuple[str, int]]:
        return caption_pieces(self.objects, self.background if self.name_background else None, self.nouns_only)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption_pieces(objects, background: str | None = None, nouns_only: bool = False) -> list[tuple[str, int]]:
    """The caption as words, each with the index of the object it names (−1 for other words).

    Colour and shape words carry their object's index, so training can tie those words' tokens
    to that object's mask.  ``nouns_only`` gives the bare form ("star and circle"): a text
    encoder that has seen words on their own encodes a lone concept word in distribution.
    """
    pieces: list[tuple[str, int]] = []
    for j, o in enumerate(objects):
        if j > 0:
            pieces.append(("and", -1) if j == len(objects) - 1 else (",", -1))
        pieces += [(o.shape, j)] if nouns_only else [(_article(o.colour), -1), (o.colour, j), (o.shape, j)]
    if background is not None and not nouns_only:
        pieces += [("on", -1), ("a", -1), (background, -1), ("background", -1)]
    return pieces


def caption(objects, background: str | None = None, nouns_only: bool = False) -> str:
    """``"a red circle, a blue square and an orange star on a white background"``."""
    return " ".join(w for w, _ in caption_pieces(objects, background, nouns_only)).replace(" ,", ",")


def sample_scene(rng: np.random.Generator, size: int = IMAGE_SIZE, n_objects: int | None = None) -> Scene:
    """One random scene: 1–3 objects placed without overlap, colours distinct from the background."""
    background = str(rng.choice(list(BACKGROUNDS)))
    n = int(rng.integers(1, MAX_OBJECTS + 1)) if n_objects is None else int(n_objects)
    colours = [c for c in COLOURS if c != background]
    shapes = rng.choice(SHAPES, size=n, replace=False)
    colours = rng.choice(colours, size=n, replace=False)
    scale = size / IMAGE_SIZE
    objects: list[ShapeObject] = []
    for shape, colour in zip(shapes, colours):
        # Draw a batch of candidate placements at once and keep the first that overlaps nothing;
        # later batches draw smaller shapes so three objects always fit.
        for attempt in range(8):
            hi = MAX_RADIUS if attempt < 4 else (MIN_RADIUS + MAX_RADIUS) / 2
            r = rng.uniform(MIN_RADIUS, hi, 32) * scale
            cx = rng.uniform(0, 1, 32) * (size - 2 * r - 2) + r + 1
            cy = rng.uniform(0, 1, 32) * (size - 2 * r - 2) + r + 1
            ok = np.ones(32, bool)
            for o in objects:
                ok &= np.hypot(cx - o.cx, cy - o.cy) >= r + o.radius + 2 * scale
            if ok.any():
                k = int(np.argmax(ok))
                objects.append(ShapeObject(str(shape), str(colour), float(cx[k]), float(cy[k]), float(r[k])))
                break
    name_bg = background != "black" or bool(rng.random() < P_NAME_BLACK_BACKGROUND)
    return Scene(tuple(objects), background, name_bg, size)


def sample_scenes(seed: int, count: int, size: int = IMAGE_SIZE) -> list[Scene]:
    """``count`` scenes from one seeded generator (the benchmark uses a seed training never does)."""
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, size) for _ in range(count)]


# --- outlines -------------------------------------------------------------------------------

def _outline(shape: str) -> tuple[np.ndarray, np.ndarray]:
    """Vertex angles (radians, increasing, y down) and radii (× outer radius) of a shape."""
    up = -math.pi / 2  # pixel y grows downwards, so "up" is −90°
    if shape == "square":
        ang = np.array([-3, -1, 1, 3]) * math.pi / 4
        rad = np.full(4, 0.9)  # side 1.27 r
    elif shape == "triangle":
        ang = up + np.arange(3) * 2 * math.pi / 3
        rad = np.ones(3)
    elif shape == "star":
        ang = up + np.arange(10) * math.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
    elif shape == "cross":
        # A plus sign with arms of half-width w: 12 corners, all visible from the centre.
        w = 0.36
        pts = [(w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w), (-w, -1)]
        ang = np.array([math.atan2(y, x) for x, y in pts])
        rad = np.array([math.hypot(x, y) for x, y in pts]) / math.hypot(w, 1)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    order = np.argsort(np.mod(ang, 2 * math.pi))
    return np.mod(ang, 2 * math.pi)[order], rad[order]


def outline_radius(shape: str, theta):
    """Radius of the outline along direction ``theta`` (torch tensor), as a fraction of the outer radius."""
    import torch

    if shape == "circle":
        return torch.ones_like(theta)
    ang, rad = _outline(shape)
    theta = torch.remainder(theta, 2 * math.pi)
    # Vertex k and k+1 bound the edge that the ray crosses; the last edge wraps around the turn.
    a = torch.as_tensor(np.append(ang, ang[0] + 2 * math.pi), dtype=theta.dtype, device=theta.device)
    r = torch.as_tensor(np.append(rad, rad[0]), dtype=theta.dtype, device=theta.device)
    k = torch.bucketize(theta, a[1:-1], right=True)  # edge index, 0..n-1
    below = theta < a[0]  # before the first vertex: on the wrapping edge
    k = torch.where(below, torch.full_like(k, len(ang) - 1), k)
    t = torch.where(below, theta + 2 * math.pi, theta)
    a0, a1, r0, r1 = a[k], a[k + 1], r[k], r[k + 1]
    ax, ay = r0 * torch.cos(a0), r0 * torch.sin(a0)
    ex, ey = r1 * torch.cos(a1) - ax, r1 * torch.sin(a1) - ay
    # Ray (s·u) meets segment A + k·E where s = cross(A, E) / cross(u, E).
    return (ax * ey - ay * ex) / (torch.cos(t) * ey - torch.sin(t) * ex)


def coverage(shape: str, dx, dy, radius):
    """Share of each pixel inside the outline (one-pixel anti-aliasing), given the pixel centres'
    offsets ``dx``, ``dy`` from the shape's centre and its outer ``radius`` (torch tensors)."""
    import torch

    rho = torch.sqrt(dx * dx + dy * dy)
    edge = radius * outline_radius(shape, torch.atan2(dy, dx))
    return (edge - rho + 0.5).clamp(0, 1)


def rasterise(scenes: list[Scene], device="cpu", generator=None):
    """Images and masks of a batch of scenes (all of one size).

    Returns ``images`` (B, 3, H, W) float32 in [-1, 1] and ``masks`` (B, MAX_OBJECTS, H, W) float32
    coverage in [0, 1] (slot i is the i-th object of the caption; unused slots are zero).
    ``generator`` (a torch.Generator on ``device``) drives the colour jitter.
    """
    import torch

    size = scenes[0].size
    b = len(scenes)
    yy, xx = torch.meshgrid(
        torch.arange(size, device=device, dtype=torch.float32) + 0.5,
        torch.arange(size, device=device, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    masks = torch.zeros(b, MAX_OBJECTS, size, size, device=device)
    colours_np = np.zeros((b, MAX_OBJECTS, 3), np.float32)
    # Group objects by shape so each outline is evaluated once per batch; one host→device copy
    # per shape (small copies dominate on a GPU otherwise).
    by_shape: dict[str, list[tuple[int, int, ShapeObject]]] = {}
    for i, scene in enumerate(scenes):
        for j, obj in enumerate(scene.objects):
            by_shape.setdefault(obj.shape, []).append((i, j, obj))
            colours_np[i, j] = COLOURS[obj.colour]
    colours = torch.from_numpy(colours_np).to(device)
    backgrounds = torch.tensor([BACKGROUNDS[s.background] for s in scenes], dtype=torch.float32).to(device)
    for shape, items in by_shape.items():
        geom = torch.tensor([(o.cx, o.cy, o.radius, i, j) for i, j, o in items], dtype=torch.float32).to(device)
        cx, cy, r = (geom[:, k].view(-1, 1, 1) for k in range(3))
        masks[geom[:, 3].long(), geom[:, 4].long()] = coverage(shape, xx - cx, yy - cy, r)
    jitter = torch.randint(-COLOUR_JITTER, COLOUR_JITTER + 1, (b, MAX_OBJECTS + 1, 3), device=device, generator=generator)
    colours = (colours + jitter[:, :MAX_OBJECTS]).clamp(0, 255)
    backgrounds = (backgrounds + jitter[:, MAX_OBJECTS]).clamp(0, 255)
    image = backgrounds.view(b, 3, 1, 1).expand(b, 3, size, size).clone()
    for j in range(MAX_OBJECTS):  # objects never overlap, so the order does not matter
        m = masks[:, j : j + 1]
        image = image * (1 - m) + colours[:, j].view(b, 3, 1, 1) * m
    return image / 127.5 - 1.0, masks


def to_uint8(images) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] → (B, H, W, 3) uint8."""
    import torch

    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()
