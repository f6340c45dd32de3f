#!/usr/bin/env python3
"""What limits the built-in model's DAAM mIoU: the attention grids, or the steps summed?

Two measurements that put bench/attribution.py's mIoU in context:

  ceiling  the mIoU a model would score if every cross-attention layer's map of a noun were
           exactly its object's mask, pooled to that layer's grid (16×16 or 8×8) and
           aggregated as the capture does (bicubic to 64×64, summed over the layers).  No
           model with these layers can do better; the gap to it is the attention itself.
  windows  the mIoU of the rendered prompts' noun maps summed over different step windows:
           all 20 steps (DAAM's cumulative map, what the benchmark scores), the last 10, 5
           and 1, and the first 10.  Shows how much the diffuse early steps cost.

Usage:
  python bench/attribution_limits.py [--prompts 100] [--tau 0.4]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import attribution  # noqa: E402

from bridge.builtin import shapes_data as sd  # noqa: E402
from bridge.masks import daam_mask, iou  # noqa: E402

# The built-in UNet's cross-attention layers by grid side (see docs/MODEL.md, Architecture).
LAYER_GRIDS = {16: 3, 8: 4}
WINDOWS = {"all steps (DAAM)": slice(None), "last 10": slice(-10, None), "last 5": slice(-5, None),
           "last 1": slice(-1, None), "first 10": slice(None, 10)}


def ceiling_miou(scenes, tau: float, layer_grids=LAYER_GRIDS) -> float:
    """mIoU of perfect per-layer attention (the mask pooled to each grid) against the masks."""
    import torch
    import torch.nn.functional as F

    _, masks = sd.rasterise(scenes)
    masks = masks.float()
    size = masks.shape[-1]
    agg = sum(n * F.interpolate(F.adaptive_avg_pool2d(masks, side), size=size, mode="bicubic",
                                align_corners=False).clamp_min(0) for side, n in layer_grids.items())
    present = np.array([[k < len(s.objects) for k in range(masks.shape[1])] for s in scenes])
    return float(iou(daam_mask(agg.numpy(), tau), masks.numpy() > 0.5)[present].mean())


def window_mious(prompts: int, tau: float, model: str = "builtin", device: str = "auto") -> tuple[dict, dict]:
    """Render the benchmark's first ``prompts`` prompts: mIoU of the noun maps per step window,
    and the benchmark's own summary of the same renders."""
    scores: dict[str, list[float]] = {name: [] for name in WINDOWS}

    def evaluate(scene, words, cumulative, image, seconds):
        per_step = np.diff(cumulative, axis=0, prepend=np.zeros_like(cumulative[:1]))
        for j, truth in enumerate(attribution.object_masks(image, scene)):
            if truth is None:
                continue
            w = attribution.word_index(words, scene, j, "shape")
            for name, window in WINDOWS.items():
                m = attribution.resize_map(per_step[window, w].sum(0), image.shape[:2])
                scores[name].append(float(iou(daam_mask(m, tau), truth)))
        return attribution.evaluate_run(scene, words, cumulative, image, seconds)

    summary, _ = attribution.run_benchmark(prompts=prompts, model=model, device=device, evaluate=evaluate)
    return {name: float(np.mean(v)) if v else 0.0 for name, v in scores.items()}, summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Example: python bench/attribution_limits.py --prompts 100")
    p.add_argument("--prompts", type=int, default=100, help="benchmark prompts to render (default: 100)")
    p.add_argument("--tau", type=float, default=0.4, help="DAAM threshold (default: 0.4)")
    p.add_argument("--model", default="builtin")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    scenes = sd.sample_scenes(attribution.BENCH_SEED, max(args.prompts, 100))
    print(f"ceiling (perfect attention on the {' + '.join(f'{n}×{s}²' for s, n in LAYER_GRIDS.items())} grids), "
          f"τ = {args.tau}: mIoU {ceiling_miou(scenes, args.tau):.3f}")
    windows, summary = window_mious(args.prompts, args.tau, args.model, args.device)
    print(f"noun maps summed over step windows ({args.prompts} prompts, {summary['objects_drawn']} drawn objects, "
          f"τ = {args.tau}):")
    for name, v in windows.items():
        print(f"  {name:18s} {v:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
