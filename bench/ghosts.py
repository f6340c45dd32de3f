#!/usr/bin/env python3
"""Where the built-in model's ghost objects come from: faint extra shapes in colours nobody named.

A ghost is a region of an object colour that the caption does not name, large enough to be an
object (1 % of the image, as bench/attribution.py counts a drawn object).  The benchmark counts
renders with at least one, for the same held-out scenes (validation seed 777), at each stage of
the pipeline that could add it:

  training   the scenes as drawn (bridge/builtin/shapes_data.py): the data
  roundtrip  those images through the VAE, encoder then decoder, no denoiser at all
  generated  renders of their captions through the engine, at the model's defaults
  --samplers the same renders with other samplers and step counts (the denoising schedule)

Ghosts in the round trips as often as in the renders say the VAE draws them; ghosts that come
and go with the sampler would blame the schedule instead.  Usage:
  python bench/ghosts.py [--prompts 60] [--samplers] [--model builtin]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import attribution as at  # noqa: E402

from bridge.builtin import shapes_data as sd  # noqa: E402

VALIDATION_SEED = 777


def ghost_count(image: np.ndarray, scene: sd.Scene) -> int:
    """Object colours the scene does not name that still cover an object's worth of pixels."""
    labels = at.colour_labels(image)
    named = {o.colour for o in scene.objects} | {scene.background}
    min_area = at.MIN_AREA_FRACTION * labels.size
    return sum(int(at.largest_component(labels == at.PALETTE_NAMES.index(c)).sum() >= min_area)
               for c in sd.COLOURS if c not in named)


def share(counts) -> str:
    counts = np.asarray(counts)
    return f"{100 * np.mean(counts > 0):5.1f} % of {len(counts)} with a ghost ({counts.sum()} ghosts)"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="builtin")
    p.add_argument("--prompts", type=int, default=60)
    p.add_argument("--samplers", action="store_true", help="also render with Euler, first-order DPM and 50 steps")
    args = p.parse_args(argv)

    import torch
    from tqdm import tqdm

    from bridge.bus import Bus
    from bridge.engine import Engine, GenerationRequest

    scenes = sd.sample_scenes(VALIDATION_SEED, args.prompts)
    images, _ = sd.rasterise(scenes)
    drawn = sd.to_uint8(images)
    print(f"training    {share([ghost_count(im, s) for im, s in zip(drawn, scenes)])}")

    engine = Engine.load(args.model, device="cpu", progress=False)
    vae = engine.pipe.vae
    with torch.no_grad():
        z = vae.encode(images.to(vae.dtype)).latent_dist.mean
        back = vae.decode(z).sample.float()
    print(f"roundtrip   {share([ghost_count(im, s) for im, s in zip(sd.to_uint8(back), scenes)])}")

    class Final:
        image = None

        def on_run_end(self, end):
            self.image = end.image

    final = Final()
    bus = Bus([final])
    base = engine.pipe.scheduler
    configs = [("generated", base, 20)]
    if args.samplers:
        from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler

        configs += [("  Euler", EulerDiscreteScheduler.from_config(base.config), 20),
                    ("  DPM 1st order", DPMSolverMultistepScheduler.from_config(base.config, solver_order=1), 20),
                    ("  50 steps", base, 50)]
    for name, scheduler, steps in configs:
        engine.pipe.scheduler = scheduler
        counts = []
        for i, scene in enumerate(tqdm(scenes, desc=name.strip(), leave=False)):
            engine.generate(GenerationRequest(scene.caption, seed=i, steps=steps), bus)
            counts.append(ghost_count(final.image, scene))
        print(f"{name:11s} {share(counts)}")
    engine.pipe.scheduler = base
    return 0


if __name__ == "__main__":
    sys.exit(main())
