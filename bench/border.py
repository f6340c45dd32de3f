#!/usr/bin/env python3
"""Where the built-in model's frame comes from: a purple/red border and a dark-blue left edge.

Measures the border artefact — the largest difference, over the colour channels, between the
mean of the 3-pixel ring at the image's edge and the mean of its interior (8 pixels in) — on:

  training   the shapes training images themselves (bridge/builtin/shapes_data.py)
  roundtrip  flat images (black, gray, white, blue) through the VAE, encoder and decoder
  decoder    the decoder alone on a constant latent (the latent of a flat gray image's centre)
  generated  renders of flat-background prompts

A border in the decoder's output for a constant latent, with none in the training images,
says the VAE decoder makes it (its convolutions see zero padding at the edges), not the data
and not the denoiser.  Usage:  python bench/border.py [--model builtin] [--prompts 8]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RING, INNER = 3, 8


def border_error(img: np.ndarray, median: bool = False) -> float:
    img = np.asarray(img, np.float32)
    h, w = img.shape[:2]
    stat = np.median if median else np.mean
    inner = stat(img[INNER:h - INNER, INNER:w - INNER].reshape(-1, 3), axis=0)
    ring = np.concatenate([img[:RING].reshape(-1, 3), img[-RING:].reshape(-1, 3),
                           img[:, :RING].reshape(-1, 3), img[:, -RING:].reshape(-1, 3)])
    return float(np.abs(stat(ring, axis=0) - inner).max())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="builtin")
    p.add_argument("--prompts", type=int, default=8)
    args = p.parse_args(argv)

    import torch

    from bridge.builtin import shapes_data as sd
    from bridge.bus import Bus
    from bridge.engine import Engine, GenerationRequest

    images, _ = sd.rasterise(sd.sample_scenes(5, 200))
    training = [border_error(im, median=True) for im in sd.to_uint8(images)]
    print(f"training images (200): border error mean {np.mean(training):.1f}, max {np.max(training):.1f} levels of 255")

    engine = Engine.load(args.model, device="cpu", progress=False)
    vae = engine.pipe.vae
    size = engine.native_size[1]

    def decode(z):
        with torch.no_grad():
            y = vae.decode(z).sample
        return ((y[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).numpy()

    for colour in ((0, 0, 0), (128, 128, 128), (255, 255, 255), (40, 60, 160)):
        x = torch.tensor(colour, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, size, size) / 127.5 - 1
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mean
        print(f"VAE round trip of a flat {colour}: border error {border_error(decode(z)):.1f}")
        if colour == (128, 128, 128):
            centre = z[:, :, z.shape[2] // 2:z.shape[2] // 2 + 1, z.shape[3] // 2:z.shape[3] // 2 + 1]
            print(f"  decoder alone on that latent's centre, constant everywhere: border error "
                  f"{border_error(decode(centre.expand_as(z).contiguous())):.1f}")

    class Final:
        image = None

        def on_run_end(self, end):
            self.image = end.image

    final, errors = Final(), []
    prompts = ["a red circle on a gray background", "a blue square on a white background",
               "a yellow star on a black background", "a green triangle on a gray background"]
    for i in range(args.prompts):
        engine.generate(GenerationRequest(prompts[i % len(prompts)], seed=i, steps=20), Bus([final]))
        errors.append(border_error(final.image, median=True))  # median: the object is not the interior
    print(f"generated, flat backgrounds ({args.prompts}): border error mean {np.mean(errors):.1f}, max {np.max(errors):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
