"""Train the built-in shapes model: a small latent text-to-image diffusion model.

    python -m bridge.builtin.train_shapes                       # the shipped recipe, on the CPU
    python -m bridge.builtin.train_shapes --device cuda         # the same recipe on a GPU
    python -m bridge.builtin.train_shapes --estimate            # projected duration, nothing saved

The result is an ordinary Stable Diffusion pipeline folder (UNet with cross-attention, CLIP text
encoder and CLIP BPE tokenizer, AutoencoderKL, scheduler) written to
``bridge/builtin/models/shapes/`` with float16 weights, loaded by the same code as any model.

Three stages, on images drawn by :mod:`bridge.builtin.shapes_data`:

1. the VAE learns to reconstruct 64×64 images from 4×16×16 latents;
2. a fixed set of scenes is drawn and encoded once (latents, captions, object masks), so the
   denoiser's steps spend no time on drawing or encoding;
3. the UNet and the text encoder learn together to denoise those latents (v-prediction with
   min-SNR weighting, 10 % empty captions for classifier-free guidance), so the caption words'
   token states are shaped by what the UNet draws.  Because every object's mask is known, a
   grounding term pulls the cross-attention of each colour and shape token inside its object's
   mask (TokenCompose's token loss, Wang et al. 2024) and over all of it (its pixel loss): this
   is what makes the model's attention maps cover the objects they name.  ``--self-ground-weight``
   (off in the recipe) does the same for self-attention: each object's pixels pulled onto the
   object; ``--init FOLDER`` fine-tunes a saved folder instead of starting from scratch.

Everything is seeded; the exact command and numbers of the shipped weights are in docs/MODEL.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from bridge.builtin.training.architectures import MAX_TOKENS, MERGES
from bridge.builtin.training.captions import CaptionEncoder
from bridge.builtin.training.dataset import encode_scenes
from bridge.builtin.training.precision import bf16_native
from bridge.builtin.training.save import save_pipeline
from bridge.builtin.training.stages import estimate, load_vae, train_denoiser, train_vae
from bridge.limits import LIMITS
from bridge.tokenizers import clip_bpe

log = logging.getLogger("train_shapes")

DEFAULT_OUT = Path(__file__).with_name("models") / "shapes"

# At Stable Diffusion's 7.5 this model over-saturates: ragged edges, and some colour-shape pairs
# ("a green triangle") come out in the wrong colour.  3 was chosen on validation prompts.
GUIDANCE = 3.0
# The VAE decodes 64×64 in a fraction of a step, so every step's preview can be a full decode of
# its denoised estimate: the picture forming in its true colours (a linear preview washes them out).
VAE_EVERY = 1


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m bridge.builtin.train_shapes",
        description="Train the built-in shapes text-to-image model (seeded; the defaults are the shipped recipe).",
        epilog="Example: python -m bridge.builtin.train_shapes --device cuda --out /tmp/shapes",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="pipeline folder to write (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="bf16 autocast (weights stay float32); auto: bf16 where the device runs it natively "
                        "(CUDA, CPUs with AVX512-BF16 or AMX), else fp32 (default: %(default)s)")
    p.add_argument("--vae-steps", type=int, default=2000)
    p.add_argument("--vae-batch", type=int, default=16)
    p.add_argument("--vae-lr", type=float, default=2e-3)
    p.add_argument("--kl-weight", type=float, default=1e-4, help="weight of the VAE's KL term (per pixel value)")
    p.add_argument("--scenes", type=int, default=60000, help="scenes drawn and encoded once for the denoiser")
    p.add_argument("--steps", type=int, default=3600, help="denoiser training steps")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--prediction", choices=("v_prediction", "epsilon"), default="v_prediction", help="what the UNet predicts")
    p.add_argument("--min-snr", type=float, default=5.0, help="min-SNR-γ loss weighting (0: plain MSE)")
    p.add_argument("--drop-caption", type=float, default=0.1)
    p.add_argument("--ground-weight", type=float, default=0.1, help="weight of the attention grounding term (0: off)")
    p.add_argument("--pixel-weight", type=float, default=1.0,
                   help="weight, inside the grounding term, of the per-pixel coverage loss (0: off; see docs/MODEL.md)")
    p.add_argument("--self-ground-weight", type=float, default=0.0,
                   help="weight of the self-attention grounding term: each object's pixels' self-attention pulled "
                        "onto the object, as bench/self_attention.py scores it (0: off; see docs/MODEL.md)")
    p.add_argument("--self-cover-weight", type=float, default=0.0,
                   help="weight, inside the self-attention term, of the cover part: each of an object's pixels asked to "
                        "attend over the whole object, not only near itself (0: off; see docs/MODEL.md)")
    p.add_argument("--self-query-power", type=float, default=1.0,
                   help="inside the self-attention term, weight each of an object's pixels by its coverage raised to "
                        "this power: above 1 the interior counts more than the rim (default: %(default)s)")
    p.add_argument("--init", type=Path, default=None, metavar="FOLDER",
                   help="fine-tune: start the UNet and text encoder from this pipeline folder's weights and use its "
                        "VAE and tokenizer (the VAE stage is skipped; --widths, --merges, --max-tokens are the folder's)")
    p.add_argument("--freeze-text", action="store_true",
                   help="train the UNet alone and keep the text encoder's weights as they are (with --init: the CLIP "
                        "encoder that builtin:shapes-dit reuses stays byte-identical)")
    p.add_argument("--ground-noise-tilt", type=float, default=0.0,
                   help="shift the grounding term towards noisy timesteps: per-image weight 1 + tilt·(2t/1000 − 1), "
                        "0 flat, 1 from 0 (clean) to 2 (pure noise); must lie in 0..1 (default: %(default)s)")
    p.add_argument("--guidance", type=float, default=GUIDANCE,
                   help="guidance scale the saved folder recommends (its bridge_defaults.json); this small model "
                        "over-saturates at Stable Diffusion's 7.5 (default: %(default)s, see docs/MODEL.md)")
    p.add_argument("--widths", type=int, nargs="+", default=[32, 64], help="UNet channels per level")
    p.add_argument("--merges", type=int, default=MERGES, help="first K CLIP BPE merges kept in the vocabulary")
    p.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help="text encoder positions (captions need 18)")
    p.add_argument("--estimate", action="store_true", help="time a few steps of each stage, print the projected duration, save nothing")
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--no-progress", dest="progress", action="store_false", help="log lines instead of bars")
    args = p.parse_args(argv)
    if args.init is not None:
        missing = [part for part in ("unet", "text_encoder", "vae", "tokenizer") if not (args.init / part).is_dir()]
        if missing:
            p.error(f"--init {args.init}: not a Stable Diffusion pipeline folder like the shipped one (no {', '.join(missing)})")
    if not 0.0 <= args.ground_noise_tilt <= 1.0:
        p.error(f"--ground-noise-tilt must lie in 0..1 (above 1 some weights turn negative), got {args.ground_noise_tilt}")
    if not LIMITS.guidance.lo <= args.guidance <= LIMITS.guidance.hi:  # the folder's default must be a valid request
        p.error(f"--guidance must lie in {LIMITS.guidance.lo:g}..{LIMITS.guidance.hi:g}, got {args.guidance}")
    return args


def main(argv=None) -> int:
    from tqdm import tqdm

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    args.bf16 = args.precision == "bf16" or (args.precision == "auto" and bf16_native(device))
    log.info("training on %s with %d threads, %s", device, torch.get_num_threads(), "bf16 autocast" if args.bf16 else "fp32")
    # Exact float32 matmuls on GPUs too, so a GPU run follows the CPU recipe closely.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    from transformers import CLIPTokenizer

    tok_dir = Path(tempfile.mkdtemp(prefix="shapes-tok-"))
    if args.init is not None:
        shutil.copytree(args.init / "tokenizer", tok_dir, dirs_exist_ok=True)
    else:
        clip_bpe.write_clip_tokenizer(tok_dir, args.merges, model_max_length=args.max_tokens)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    if args.estimate:
        estimate(args, device, tokenizer)
        return 0
    t0 = time.time()
    vae = train_vae(args, device) if args.init is None else load_vae(args.init).to(device)
    t_vae = time.time() - t0
    with tqdm(total=args.scenes, desc="scenes", disable=not args.progress) as bar:
        data = encode_scenes(vae, CaptionEncoder(tokenizer), args, device, bar=bar)
    t_data = time.time() - t0 - t_vae
    log.info("%d scenes drawn and encoded in %.1f s", len(data), t_data)
    unet, text = train_denoiser(args, data, tokenizer, device)
    t_all = time.time() - t0
    log.info("training took %.1f s (vae %.1f s, scenes %.1f s) on %s", t_all, t_vae, t_data, device)
    meta = {
        "command": "python -m bridge.builtin.train_shapes " + " ".join(sys.argv[1:] if argv is None else argv),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "seconds": round(t_all, 1),
        "seconds_by_stage": {"vae": round(t_vae, 1), "scenes": round(t_data, 1), "unet": round(t_all - t_vae - t_data, 1)},
        "torch": torch.__version__,
    }
    if args.init is not None and (args.init / "training.json").is_file():  # a fine-tune keeps its base's record
        meta["init_training"] = json.loads((args.init / "training.json").read_text())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_pipeline(args.out, vae, unet, text, tok_dir, meta, args.prediction, args.guidance, VAE_EVERY)
    shutil.rmtree(tok_dir, ignore_errors=True)
    log.info("next: python -m bridge.builtin.fit_preview --model %s  (fits the per-step preview to the new weights)", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
