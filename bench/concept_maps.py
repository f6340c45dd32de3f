#!/usr/bin/env python3
"""Concept maps against word maps, on the same held-out prompts and seeds (bench/attribution.py's scenes).

Every prompt renders once through the engine with the scene's shape nouns plus "background"
as concepts (OVAM on a UNet such as the built-in model, ConceptAttention on Flux), so the word
maps and the concept maps come from the very same run; with ``--by colour`` its colour words
are the concepts and their maps the word maps.  Per drawn object (its colour-segmented
mask, as bench/attribution.py finds it):

  word maps, τ = 0.4      IoU of the DAAM-0.4 mask of the shape noun's final cumulative map
  concepts, argmax        IoU of the pixels where the object's shape concept wins the argmax
                          over the scene's concepts and "background" (ConceptAttention's
                          segmentation), the concept maps averaged over the steps, each ÷ its
                          peak (bridge/export.py's segments, as the viewer and export draw it)
  concepts, τ = 0.4       IoU of the DAAM-0.4 mask of the concept's own averaged map
  words, argmax           the same argmax over the shape nouns' final word maps (no background
                          word exists in the prompt, so a pixel is background where every
                          noun's peak-normalised map is below 0.4)
  per step                the concepts' argmax of each step's own map (not averaged), as a
                          curve, with its middle and best step: ConceptAttention's paper finds
                          the middle of denoising the most useful
  grid ceiling            the argmax of perfect maps on the concept maps' grid (each object's
                          drawn mask average-pooled to the grid, the background the rest,
                          upsampled as the capture upsamples) against those masks: what a map
                          at that grid can reach at best

Usage:
  python bench/concept_maps.py [--prompts 100] [--model builtin] [--steps 20] [--concept-layers 1,2] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from attribution import BENCH_SEED, object_masks, perfect_maps, resize_map, word_index  # noqa: E402
from bridge.builtin import shapes_data as sd  # noqa: E402
from bridge.export import segments  # noqa: E402
from bridge.masks import daam_mask, iou  # noqa: E402

TAU = 0.4
BACKGROUND = "background"
METHODS = ("word maps, τ = 0.4", "concepts, argmax", "concepts, τ = 0.4", "words, argmax")


class Collector:
    def __init__(self):
        self.start, self.cumulative, self.concepts = None, [], []

    def on_run_start(self, start):
        self.start, self.cumulative, self.concepts = start, [], []

    def on_step(self, frame):
        self.cumulative.append(frame.cumulative)
        if "concepts" in frame.kinds:
            self.concepts.append(frame.kinds["concepts"].astype(np.float32))

    def on_run_end(self, end):
        pass


def score(scene: sd.Scene, words, cumulative_last: np.ndarray, concept_steps: list[np.ndarray], concepts: tuple[str, ...],
          image: np.ndarray, by: str = "shape") -> dict[str, list]:
    """Per method, the IoU of each drawn object ("per step": a list per object, one IoU a step)."""
    hw = image.shape[:2]
    concept_mean = np.mean(concept_steps, axis=0)
    truth = object_masks(image, scene)
    final = resize_map(cumulative_last, hw)
    concept_maps = resize_map(concept_mean, hw)
    won = segments(concept_maps)
    nouns = [word_index(words, scene, j, by) for j in range(len(scene.objects))]
    noun_maps = final[nouns] / np.maximum(final[nouns].reshape(len(nouns), -1).max(axis=1), 1e-12)[:, None, None]
    noun_won = np.where(noun_maps.max(axis=0) >= TAU, noun_maps.argmax(axis=0), -1)
    out = {m: [] for m in METHODS}
    out["per step"] = []
    per_step = [segments(resize_map(m, hw)) for m in concept_steps]
    for j, mask in enumerate(truth):
        if mask is None:
            continue
        c = concepts.index(getattr(scene.objects[j], by))
        out[METHODS[0]].append(float(iou(daam_mask(final[nouns[j]], TAU), mask)))
        out[METHODS[1]].append(float(iou(won == c, mask)))
        out[METHODS[2]].append(float(iou(daam_mask(concept_maps[c], TAU), mask)))
        out[METHODS[3]].append(float(iou(noun_won == j, mask)))
        out["per step"].append([float(iou(w == c, mask)) for w in per_step])
    return out


def grid_ceiling(scenes, grid: int) -> float:
    """Argmax mIoU of perfect concept maps at ``grid`` × ``grid`` against the scenes' drawn masks."""
    import torch

    _, masks = sd.rasterise(scenes, "cpu", torch.Generator().manual_seed(0))
    scores = []
    for scene, m in zip(scenes, masks.float().numpy()):
        objects = m[:len(scene.objects)]
        background = np.clip(1 - objects.sum(0, keepdims=True), 0, None)  # the objects do not overlap
        won = segments(perfect_maps(np.concatenate([objects, background]), (grid, grid), objects.shape[-2:]))
        scores += [float(iou(won == j, truth)) for j, truth in enumerate(objects > 0.5) if truth.any()]
    return float(np.mean(scores))


def run(prompts: int, model: str, steps: int, guidance, device: str, seed: int, progress: bool = True, concept_layers=None,
        by: str = "shape"):
    from tqdm import tqdm

    from bridge.bus import Bus
    from bridge.engine import Engine, GenerationRequest

    engine = Engine.load(model, device=device, progress=False)
    sink = Collector()
    bus = Bus([sink])
    ious = {m: [] for m in METHODS}
    curves = []
    drawn = objects = 0
    seconds = []
    scenes = sd.sample_scenes(seed, prompts)
    for i, scene in enumerate(tqdm(scenes, desc="concept maps", disable=not progress)):
        concepts = tuple(dict.fromkeys(getattr(o, by) for o in scene.objects)) + (BACKGROUND,)
        t0 = time.perf_counter()
        end = engine.generate(GenerationRequest(scene.caption, seed=i, steps=steps, guidance=guidance, concepts=concepts,
                                                concept_layers=concept_layers), bus)
        seconds.append(time.perf_counter() - t0)
        if end.status != "completed":
            raise RuntimeError(f"render of {scene.caption!r} ended {end.status}: {end.error}")
        result = score(scene, sink.start.words, sink.cumulative[-1], sink.concepts, concepts, end.image, by)
        objects += len(scene.objects)
        drawn += len(result[METHODS[0]])
        for m in METHODS:
            ious[m] += result[m]
        curves += result["per step"]
    curve = np.mean(curves, axis=0) if curves else np.zeros(steps)
    width, height = engine.native_size
    grid = engine.family.latent_hw(height, width)[0] // getattr(engine.family, "token_patch", 1)  # the maps' finest grid
    return {
        "model": model, "family": engine.family.name, "method": "OVAM" if engine.family.name in ("sd", "sdxl") else "ConceptAttention",
        "concept_layers": list(concept_layers) if concept_layers else "default", "by": by,
        "prompts": prompts, "objects": objects, "objects_drawn": drawn, "steps": steps,
        "miou": {m: float(np.mean(v)) if v else 0.0 for m, v in ious.items()},
        "concepts_argmax_per_step": [round(float(v), 4) for v in curve],
        "grid": grid, "grid_ceiling": grid_ceiling(scenes, grid),
        "seconds_per_render": float(np.mean(seconds)), "seconds_per_render_median": float(np.median(seconds)),
    }


def format_summary(s: dict) -> str:
    layers = "" if s["concept_layers"] == "default" else f", blocks {','.join(map(str, s['concept_layers']))}"
    lines = [f"{s['prompts']} held-out prompts on {s['model']} ({s['family']}: concepts by {s['method']}{layers}; "
             f"each object's {s['by']} as its concept), "
             f"{s['objects_drawn']} of {s['objects']} objects drawn; render with concepts "
             f"{s['seconds_per_render']:.2f} s mean, {s['seconds_per_render_median']:.2f} s median",
             "mIoU over drawn objects:"]
    lines += [f"  {m:<22} {v:.3f}" for m, v in s["miou"].items()]
    gap = s["miou"]["concepts, argmax"] - s["miou"]["word maps, τ = 0.4"]
    lines.append(f"concepts (argmax) − word maps (τ = 0.4): {gap:+.3f}  (ConceptAttention's paper ordering: ≥ +0.05)")
    curve = s["concepts_argmax_per_step"]
    best = int(np.argmax(curve))
    lines.append("concepts, argmax of each step's own map, steps 1…{}:\n  {}".format(len(curve), " ".join(f"{v:.2f}" for v in curve)))
    lines.append(f"  middle step ({len(curve) // 2 + 1}): {curve[len(curve) // 2]:.3f}; best step ({best + 1}): {curve[best]:.3f}; "
                 f"best − word maps: {curve[best] - s['miou']['word maps, τ = 0.4']:+.3f}")
    lines.append(f"grid ceiling: perfect maps on the {s['grid']} × {s['grid']} grid score {s['grid_ceiling']:.3f} by argmax "
                 f"(the concepts reach {s['miou']['concepts, argmax'] / s['grid_ceiling']:.0%} of it)")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Example: python bench/concept_maps.py --prompts 100")
    p.add_argument("--prompts", type=int, default=100, help="held-out prompts to render (default: %(default)s)")
    p.add_argument("--model", default="builtin", help="a model that knows the shapes vocabulary (default: %(default)s)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=None, help="default: the model's")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=BENCH_SEED, help="scene generator seed (default: %(default)s, bench/attribution.py's)")
    p.add_argument("--concept-layers", default=None, metavar="N,N,…",
                   help="on Flux, the dual-stream blocks whose concept maps are averaged, as render's flag (default: the later half)")
    p.add_argument("--by", choices=("shape", "colour"), default="shape",
                   help="the word of each object that is its concept and its word map (default: %(default)s)")
    p.add_argument("--out", type=Path, help="also write the summary as JSON")
    args = p.parse_args(argv)
    from bridge.commands.render import parse_layer_indices

    summary = run(args.prompts, args.model, args.steps, args.guidance, args.device, args.seed,
                  concept_layers=parse_layer_indices(args.concept_layers), by=args.by)
    print(format_summary(summary))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
