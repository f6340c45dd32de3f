#!/usr/bin/env python3
"""Attribution quality of DAAM maps on the built-in shapes model (DAAM paper, noun segmentation).

For held-out prompts (drawn with a generator seed that training never uses) the model renders
through the engine, exactly as a user's render does, and the benchmark compares:

  accuracy  share of prompts whose named objects all appear with the named colour in the image,
            found by colour segmentation (nearest palette colour, within a distance)
  mIoU      per present object: IoU between the DAAM-τ mask (Eqn. 7 on the final cumulative
            map of the shape noun) and the object's colour-segmented mask; mean over objects.
            τ = 0.4 (the paper's best), also 0.3 and 0.5.  A second column uses the colour word
            and the noun together (their maps summed).
  per step  mIoU of the cumulative map after each step (τ = 0.4): the first step that reaches
            90 % of the final mIoU says when the objects' places are settled.
  shapes    share of drawn objects whose mask is best fitted by the named shape's outline
            (bench/shape_fit.py); accuracy and mIoU look at colours and places only.

Usage:
  python bench/attribution.py [--prompts 200] [--model builtin] [--steps 20] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.builtin import shapes_data as sd  # noqa: E402
from bridge.masks import daam_mask, iou  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shape_fit  # noqa: E402

BENCH_SEED = 20231  # training draws scenes from seeds 0–3; this one it never sees
TAUS = (0.3, 0.4, 0.5)
MAX_COLOUR_DISTANCE = 90.0  # RGB distance to the nearest palette colour; farther pixels are "other"
MIN_AREA_FRACTION = 0.01  # 41 px at 64×64; the smallest training object covers about 70 px
SETTLED_SHARE = 0.9

PALETTE_NAMES = list(sd.COLOURS) + [b for b in sd.BACKGROUNDS if b not in sd.COLOURS]
PALETTE = np.array([sd.COLOURS.get(n) or sd.BACKGROUNDS[n] for n in PALETTE_NAMES], np.float32)


def colour_labels(image: np.ndarray) -> np.ndarray:
    """Index into PALETTE_NAMES of each pixel's nearest colour, −1 where none is near, (H, W)."""
    d = np.linalg.norm(image.astype(np.float32)[..., None, :] - PALETTE, axis=-1)
    label = d.argmin(-1)
    return np.where(d.min(-1) <= MAX_COLOUR_DISTANCE, label, -1)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected region of a boolean mask (label propagation, vectorised)."""
    if not mask.any():
        return mask
    big = mask.size + 1
    labels = np.where(mask, np.arange(1, mask.size + 1).reshape(mask.shape), big)
    while True:  # each pass spreads the smallest label one pixel; stops when nothing changes
        p = np.pad(labels, 1, constant_values=big)
        nxt = np.minimum.reduce([labels, p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]])
        nxt = np.where(mask, nxt, big)
        if np.array_equal(nxt, labels):
            break
        labels = nxt
    ids, counts = np.unique(labels[mask], return_counts=True)
    return labels == ids[counts.argmax()]


def object_masks(image: np.ndarray, scene: sd.Scene) -> list[np.ndarray | None]:
    """Colour-segmented mask of each named object (the largest region of its colour), or None
    when no region of that colour is large enough to be the object."""
    labels = colour_labels(image)
    min_area = MIN_AREA_FRACTION * labels.size
    out = []
    for obj in scene.objects:
        m = largest_component(labels == PALETTE_NAMES.index(obj.colour))
        out.append(m if m.sum() >= min_area else None)
    return out


def word_index(words: tuple[str, ...], scene: sd.Scene, obj_index: int, which: str) -> int:
    """Position in the engine's word list of an object's colour or shape word."""
    pieces = scene.pieces
    if tuple(words) == tuple(w for w, _ in pieces):
        return next(i for i, (w, j) in enumerate(pieces) if j == obj_index and w == getattr(scene.objects[obj_index], which))
    return list(words).index(getattr(scene.objects[obj_index], which))  # names are distinct within a caption


def perfect_maps(masks: np.ndarray, grid: tuple[int, int], hw: tuple[int, int]) -> np.ndarray:
    """Masks (..., H, W) as attention on a ``grid`` (rows, columns) of cells would draw them at
    best: each cell the masks' mean over it, upsampled to ``hw`` as the capture upsamples
    (:func:`resize_map`).  The benches' ceilings score these."""
    (h, w), (gh, gw) = masks.shape[-2:], grid
    cells = masks.astype(np.float32).reshape(*masks.shape[:-2], gh, h // gh, gw, w // gw).mean(axis=(-3, -1))
    return resize_map(cells, hw)


def resize_map(m: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of maps (..., h, w) to the image size (no-op when sizes agree)."""
    if m.shape[-2:] == tuple(hw):
        return m.astype(np.float32)
    import torch

    t = torch.from_numpy(m.astype(np.float32)).reshape(-1, 1, *m.shape[-2:])
    r = torch.nn.functional.interpolate(t, size=hw, mode="bicubic", align_corners=False).clamp_min(0)
    return r.reshape(*m.shape[:-2], *hw).numpy()


class Collector:
    """A bus sink that keeps what the benchmark needs from one run."""

    def __init__(self):
        self.start = None
        self.cumulative: list[np.ndarray] = []
        self.end = None

    def on_run_start(self, start):
        self.start, self.cumulative, self.end = start, [], None

    def on_step(self, frame):
        self.cumulative.append(frame.cumulative)

    def on_run_end(self, end):
        self.end = end


@dataclass
class PromptResult:
    prompt: str
    objects: int
    drawn: int
    seconds: float
    iou_noun: dict = field(default_factory=dict)  # tau → list of IoU over drawn objects
    iou_pair: dict = field(default_factory=dict)
    iou_steps: list = field(default_factory=list)  # per drawn object: IoU per step (τ = 0.4)
    shape_ok: list = field(default_factory=list)  # per drawn object: does the named shape fit best
    drawn_shapes: list = field(default_factory=list)  # per drawn object: the shape its caption names


def evaluate_run(scene: sd.Scene, words, cumulative: np.ndarray, image: np.ndarray, seconds: float) -> PromptResult:
    """Score one rendered prompt: which objects are drawn, and how well their maps fit them."""
    masks = object_masks(image, scene)
    res = PromptResult(scene.caption, len(scene.objects), sum(m is not None for m in masks), seconds,
                       {t: [] for t in TAUS}, {t: [] for t in TAUS})
    final = resize_map(cumulative[-1], image.shape[:2])
    steps = None
    for j, truth in enumerate(masks):
        if truth is None:
            continue
        noun = final[word_index(words, scene, j, "shape")]
        pair = noun + final[word_index(words, scene, j, "colour")]
        for tau in TAUS:
            res.iou_noun[tau].append(float(iou(daam_mask(noun, tau), truth)))
            res.iou_pair[tau].append(float(iou(daam_mask(pair, tau), truth)))
        if steps is None:
            steps = resize_map(cumulative, image.shape[:2])
        per_step = iou(daam_mask(steps[:, word_index(words, scene, j, "shape")], 0.4), truth[None])
        res.iou_steps.append([float(v) for v in per_step])
        res.shape_ok.append(shape_fit.classify(truth) == scene.objects[j].shape)
        res.drawn_shapes.append(scene.objects[j].shape)
    return res


def summarise(results: list[PromptResult]) -> dict:
    """Accuracy, mIoU per τ (noun, colour+noun) and the per-step curve over all drawn objects."""
    n = len(results)
    drawn_all = sum(r.drawn == r.objects for r in results)
    summary = {
        "prompts": n,
        "objects": sum(r.objects for r in results),
        "objects_drawn": sum(r.drawn for r in results),
        "accuracy": drawn_all / n if n else 0.0,
        "miou_noun": {str(t): float(np.mean([v for r in results for v in r.iou_noun[t]] or [0.0])) for t in TAUS},
        "miou_colour_noun": {str(t): float(np.mean([v for r in results for v in r.iou_pair[t]] or [0.0])) for t in TAUS},
        "shape_accuracy": float(np.mean([v for r in results for v in r.shape_ok] or [0.0])),
        "shape_accuracy_by_shape": {
            shape: float(np.mean(oks)) for shape in sd.SHAPES
            if (oks := [ok for r in results for ok, s in zip(r.shape_ok, r.drawn_shapes) if s == shape])
        },
        "seconds_per_render": float(np.mean([r.seconds for r in results])) if n else 0.0,
        "seconds_per_render_median": float(np.median([r.seconds for r in results])) if n else 0.0,
        "seconds_per_render_min": float(np.min([r.seconds for r in results])) if n else 0.0,
    }
    by_count = {}
    for k in sorted({r.objects for r in results}):
        group = [r for r in results if r.objects == k]
        ious = [v for r in group for v in r.iou_noun[0.4]]
        by_count[str(k)] = {
            "prompts": len(group),
            "accuracy": sum(r.drawn == r.objects for r in group) / len(group),
            "objects_drawn": sum(r.drawn for r in group) / sum(r.objects for r in group),
            "miou_noun_0.4": float(np.mean(ious)) if ious else 0.0,
        }
    summary["by_object_count"] = by_count
    curves = [c for r in results for c in r.iou_steps]
    if curves:
        curve = np.mean(np.array(curves), axis=0)
        summary["miou_per_step"] = [round(float(v), 4) for v in curve]
        reached = np.nonzero(curve >= SETTLED_SHARE * curve[-1])[0]
        summary["settled_step"] = int(reached[0]) + 1 if len(reached) else len(curve)  # 1-based
    return summary


def render(engine, request, bus):
    """One run through the engine; a run that does not complete stops the benchmark."""
    end = engine.generate(request, bus)
    if end.status != "completed":
        raise RuntimeError(f"render of {request.prompt!r} ended {end.status}: {end.error}")
    return end


def run_benchmark(prompts: int = 200, model: str = "builtin", steps: int = 20, guidance=None, device: str = "auto",
                  seed: int = BENCH_SEED, progress: bool = True, engine=None, on_result=None,
                  evaluate=evaluate_run, layers=None) -> tuple[dict, list[PromptResult]]:
    """Render ``prompts`` held-out scenes through the engine and score them.

    ``on_result(results)`` is called after each prompt (the CLI saves partial results with it).
    ``evaluate`` scores one render (the arguments of :func:`evaluate_run`); other benchmarks pass
    a scorer that also looks at the maps in their own way.  ``layers`` is the engine's layer
    filter (default: every cross-attention layer).
    """
    from tqdm import tqdm

    from bridge.bus import Bus
    from bridge.engine import Engine, GenerationRequest

    engine = engine or Engine.load(model, device=device, progress=False)
    sink = Collector()
    bus = Bus([sink])
    results = []
    for i, scene in enumerate(tqdm(sd.sample_scenes(seed, prompts), desc="attribution", disable=not progress)):
        t0 = time.perf_counter()
        end = render(engine, GenerationRequest(scene.caption, seed=i, steps=steps, guidance=guidance, layers=layers), bus)
        seconds = time.perf_counter() - t0
        results.append(evaluate(scene, sink.start.words, np.stack(sink.cumulative), end.image, seconds))
        if on_result:
            on_result(results)
    return summarise(results), results


def format_summary(s: dict) -> str:
    lines = [
        f"prompts {s['prompts']}  objects {s['objects']}  drawn {s['objects_drawn']}  "
        f"render (engine, 20 steps, capture and previews) mean {s['seconds_per_render']:.2f} s, "
        f"median {s['seconds_per_render_median']:.2f} s, min {s['seconds_per_render_min']:.2f} s",
        f"generation accuracy (all named objects drawn in their colour): {100 * s['accuracy']:.1f} %  (target ≥ 80 %)",
        f"shape accuracy (drawn objects whose outline fits the named shape best): {100 * s['shape_accuracy']:.1f} %  ("
        + ", ".join(f"{k} {100 * v:.0f} %" for k, v in s.get("shape_accuracy_by_shape", {}).items()) + ")",
        "mIoU of DAAM-τ masks with colour-segmented objects (target ≥ 0.60 at τ = 0.4):",
        "   τ     noun   colour+noun",
    ]
    for t in TAUS:
        lines.append(f"  {t:.1f}   {s['miou_noun'][str(t)]:.3f}   {s['miou_colour_noun'][str(t)]:.3f}")
    if s.get("by_object_count"):
        lines.append("by objects in the prompt:   prompts   accuracy   objects drawn   mIoU (noun, 0.4)")
        for k, g in s["by_object_count"].items():
            lines.append(f"  {k}                          {g['prompts']:5d}   {100 * g['accuracy']:6.1f} %   "
                         f"{100 * g['objects_drawn']:9.1f} %   {g['miou_noun_0.4']:.3f}")
    if "miou_per_step" in s:
        curve = s["miou_per_step"]
        lines.append("per-step mIoU of the cumulative noun map (τ = 0.4): " + " ".join(f"{v:.2f}" for v in curve))
        lines.append(f"first step reaching {int(100 * SETTLED_SHARE)} % of the final mIoU: "
                     f"{s['settled_step']} of {len(curve)}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="Example: python bench/attribution.py --prompts 200",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=200, help="held-out prompts to render (default: %(default)s)")
    p.add_argument("--model", default="builtin", help="model to test; it must know the shapes vocabulary (default: %(default)s)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=None, help="default: the model's (3 for the shapes model, from its bridge_defaults.json)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=BENCH_SEED, help="scene generator seed (default: %(default)s)")
    p.add_argument("--out", type=Path, help="also write the summary and per-prompt scores as JSON")
    args = p.parse_args(argv)
    def save(results):
        if args.out:  # after every prompt, so an interrupted run still leaves its numbers
            args.out.parent.mkdir(parents=True, exist_ok=True)
            per_prompt = [{"prompt": r.prompt, "objects": r.objects, "drawn": r.drawn, "seconds": round(r.seconds, 3),
                           "iou_noun_0.4": r.iou_noun[0.4]} for r in results]
            summary = summarise(results) | {"requested_prompts": args.prompts, "model": args.model, "steps": args.steps}
            args.out.write_text(json.dumps({"summary": summary, "prompts": per_prompt}, indent=1) + "\n")

    summary, _ = run_benchmark(args.prompts, args.model, args.steps, args.guidance, args.device, args.seed, on_result=save)
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
