"""Train builtin:shapes-dit: a small FLUX.1-family transformer on the procedural shapes data.

    python -m bridge.builtin.train_shapes_dit                  # the recipe, on the CPU
    python -m bridge.builtin.train_shapes_dit --estimate       # projected duration, nothing saved

The result is an ordinary FluxPipeline folder, ``bridge/builtin/models/shapes-dit/``, loaded by
the same code as FLUX.1: a ``FluxTransformer2DModel`` (dual- and single-stream blocks, 2 × 2
packed latents, rotary positions), a T5 encoder and a sentencepiece-style vocabulary of the
captions (``tokenizer_2``), and — reused, frozen — the built-in shapes model's VAE (4 × 16 × 16
latents of 64 × 64 images) and CLIP text encoder (its pooled vector, as FLUX.1 uses CLIP's).

Training follows FLUX.1's objective, rectified flow: x_σ = (1 − σ)·x₀ + σ·ε with σ drawn
logit-normally (SD3's recipe), the transformer predicts ε − x₀.  The T5 encoder learns with it;
10 % of captions are dropped so that true CFG works at inference.  The grounding term of the
UNet recipe (bridge/builtin/training/grounding.py) pulls each colour and shape piece's attention
(the image queries' attention over the text, from every block) inside its object's mask.
``--text-ground-weight`` adds the other direction, off in the recipe: each caption piece's
attention over the image in the dual-stream blocks — the attention ConceptAttention's concept
queries make with the text stream's weights (docs/MODEL.md says what it did).
``--concept-weight`` trains ConceptAttention's maps themselves: the concepts (the five shape
nouns and "background", each encoded alone as the capture encodes them; with ``--concept-sets
shapes,colours`` every other step the seven colours and "background") are carried through the
dual-stream blocks by the capture's own code, and their segmentation — the saliency softmax over
the concepts, averaged over the blocks the capture averages — is pulled onto the scene's objects
and background (cross entropy per image token).  ``--init FOLDER``
fine-tunes a saved folder instead of starting from scratch.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bridge.builtin import shapes_data as sd
from bridge.builtin.training import dit
from bridge.builtin.training.grounding import concept_loss, grounding_loss
from bridge.builtin.training.precision import bf16_native, mixed_precision
from bridge.builtin.training.save import replace_folder
from bridge.builtin.training.stages import Ema, lr_at
from bridge.models.resolve import BUILTIN_DIR

log = logging.getLogger("train_shapes_dit")

DEFAULT_OUT = BUILTIN_DIR / "shapes-dit"
SHAPES = BUILTIN_DIR / "shapes"  # whose VAE and CLIP text encoder are reused
GUIDANCE = 3.0
# What --concept-weight trains, by --concept-sets: per set, the word of an object that names it
# there and the set's concepts, the background last (concept_loss).
CONCEPT_SETS = {"shapes": ("shape", sd.SHAPES + ("background",)), "colours": ("colour", tuple(sd.COLOURS) + ("background",))}


INIT_PARTS = ("transformer", "text_encoder_2", "tokenizer_2")  # what --init needs of a folder


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bridge.builtin.train_shapes_dit",
                                description="Train the built-in shapes transformer (seeded; the defaults are the recipe).",
                                epilog="Example: python -m bridge.builtin.train_shapes_dit --steps 200 --out /tmp/shapes-dit")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="pipeline folder to write (default: %(default)s, the shipped model, replaced only once training has finished)")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seeds the scenes, the weights and the noise (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto")
    p.add_argument("--scenes", type=int, default=40000, help="scenes drawn and encoded once")
    p.add_argument("--steps", type=int, default=3000, help="training steps")
    p.add_argument("--batch", type=int, default=128, help="scenes a step (default: %(default)s)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate, warm-up then cosine (default: %(default)s)")
    p.add_argument("--ema", type=float, default=0.995, help="decay of the weights' moving average that is saved (default: %(default)s)")
    p.add_argument("--dual", type=int, default=3, help="dual-stream blocks")
    p.add_argument("--single", type=int, default=3, help="single-stream blocks")
    p.add_argument("--drop-caption", type=float, default=0.1, help="share of empty captions, for CFG (default: %(default)s)")
    p.add_argument("--nouns-only", type=float, default=0.0,
                   help="share of scenes captioned by their shape nouns alone (\"star and circle\"), so lone concept words are in distribution")
    p.add_argument("--ground-weight", type=float, default=0.1,
                   help="weight of the grounding term on each image position's attention over the caption words, "
                        "the word maps' direction (default: %(default)s; 0: off)")
    p.add_argument("--text-ground-weight", type=float, default=0.0,
                   help="weight of the grounding term on the other direction: each caption word's attention over the image, "
                        "in the dual-stream blocks, what ConceptAttention's concept queries read (default: 0, off: "
                        "0.3 nearly doubles the concept maps but costs the word maps; --concept-weight, which the "
                        "shipped weights use, trains them directly; docs/MODEL.md)")
    p.add_argument("--concept-weight", type=float, default=0.0,
                   help="weight of the concept term: ConceptAttention's segmentation of the shape nouns and \"background\", "
                        "by the capture's own code, pulled onto the scene (default: 0, off; docs/MODEL.md)")
    p.add_argument("--concept-sets", default="shapes", metavar="SET[,SET]",
                   help="the concept sets the concept term takes in turn, one a step: shapes, colours (default: %(default)s)")
    p.add_argument("--pixel-weight", type=float, default=1.0,
                   help="weight of the grounding term's pixel part against its token part (default: %(default)s)")
    p.add_argument("--guidance", type=float, default=GUIDANCE, help="guidance the folder recommends (true CFG)")
    p.add_argument("--init", type=Path, default=None, metavar="FOLDER",
                   help="fine-tune: start the transformer and T5 from this FluxPipeline folder's weights and use its T5 "
                        "vocabulary (--dual and --single are the folder's)")
    p.add_argument("--estimate", action="store_true", help="time a few steps, print the projected duration, save nothing")
    p.add_argument("--log-every", type=int, default=100, help="a log line every N steps (default: %(default)s)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args(argv)
    args.concept_sets = tuple(x.strip() for x in args.concept_sets.split(",") if x.strip())
    unknown = [x for x in args.concept_sets if x not in CONCEPT_SETS]
    if unknown or not args.concept_sets:
        p.error(f"--concept-sets: {', '.join(unknown) or 'none given'}; choose from {', '.join(CONCEPT_SETS)}")
    if args.init is not None:
        missing = [part for part in INIT_PARTS if not (args.init / part).is_dir()]
        if missing:
            p.error(f"--init {args.init}: not a FluxPipeline folder like the shipped one (no {', '.join(missing)})")
    return args


def load_init(folder: Path, device):
    """A saved FluxPipeline folder's transformer and T5 encoder in float32 for training, and a
    copy of its T5 vocabulary."""
    from diffusers import FluxTransformer2DModel
    from transformers import T5EncoderModel

    transformer = FluxTransformer2DModel.from_pretrained(folder / "transformer", torch_dtype=torch.float32).to(device)
    t5 = T5EncoderModel.from_pretrained(folder / "text_encoder_2", torch_dtype=torch.float32).to(device)
    tok_dir = Path(tempfile.mkdtemp(prefix="shapes-dit-tok-"))
    shutil.copytree(folder / "tokenizer_2", tok_dir, dirs_exist_ok=True)
    return transformer, t5, tok_dir


def load_reused(device):
    """The shipped shapes model's VAE, CLIP tokenizer and text encoder, frozen."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    vae = AutoencoderKL.from_pretrained(SHAPES / "vae", torch_dtype=torch.float32).to(device).eval().requires_grad_(False)
    clip = CLIPTextModel.from_pretrained(SHAPES / "text_encoder", torch_dtype=torch.float32).to(device).eval().requires_grad_(False)
    return vae, CLIPTokenizer.from_pretrained(SHAPES / "tokenizer"), clip


def encode_data(args, vae, clip_tok, clip, t5_enc: dit.T5CaptionEncoder, device, count: int):
    """Latents, masks, T5 ids and owners, CLIP pooled vectors of ``count`` scenes (seed + 2)."""
    from bridge.builtin.training.captions import CaptionEncoder
    from bridge.builtin.training.dataset import SceneStream

    clip_enc = CaptionEncoder(clip_tok)
    stream = SceneStream(args.seed + 2, 512, device)
    bare = np.random.default_rng(args.seed + 4)  # its own generator: the scenes drawn stay the recipe's
    parts: dict[str, list] = {"z": [], "masks": [], "ids": [], "owner": [], "pooled": [], **{name: [] for name in CONCEPT_SETS}}
    done = 0
    while done < count:
        scenes, x, masks = stream.next()
        take = min(len(scenes), count - done)
        scenes, x, masks = scenes[:take], x[:take], masks[:take]
        if args.nouns_only > 0:
            scenes = [replace(s, nouns_only=True) if u < args.nouns_only else s
                      for s, u in zip(scenes, bare.random(len(scenes)))]
        with torch.no_grad():
            parts["z"].append(vae.encode(x).latent_dist.mean * vae.config.scaling_factor)
            clip_ids, _ = clip_enc.batch(scenes)
            parts["pooled"].append(clip(clip_ids.to(device)).pooler_output)
        ids, owner = t5_enc.batch(scenes)
        parts["masks"].append(torch.nn.functional.adaptive_avg_pool2d(masks, 16).half())
        parts["ids"].append(ids.to(device))
        parts["owner"].append(owner.to(device))
        for name, (word, names) in CONCEPT_SETS.items():  # each object's concept in each set
            parts[name].append(torch.tensor([[names.index(getattr(o, word)) for o in s.objects]
                                             + [-1] * (masks.shape[1] - len(s.objects)) for s in scenes], device=device))
        done += take
    data = {k: torch.cat(v) for k, v in parts.items()}
    with torch.no_grad():
        empty_clip, _ = clip_enc.encode([])
        data["empty_pooled"] = clip(torch.tensor([empty_clip], device=device)).pooler_output[0]
    data["empty_ids"] = torch.tensor(t5_enc.empty(), device=device)
    return data


def concept_set_ids(t5_tok, device) -> dict:
    """Each concept set's T5 ids, each concept alone (dit.concept_ids)."""
    return {name: dit.concept_ids(t5_tok, names).to(device) for name, (_, names) in CONCEPT_SETS.items()}


def train(args, data, t5, transformer, device, stop_after=None, times=None):
    from tqdm import tqdm

    store: list = []
    text_store = [] if args.text_ground_weight > 0 else None
    default_processors = transformer.attn_processors
    if args.ground_weight > 0 or text_store is not None:
        transformer.set_attn_processor(dit.grounded_processors(transformer, store, dit.TEXT_POSITIONS, text_store))
    concepts = None
    if args.concept_weight > 0:
        from bridge.families.joint_concepts import default_concept_layers

        concepts = dit.ConceptStream(transformer, default_concept_layers(len(transformer.transformer_blocks)))
    params = list(transformer.parameters()) + list(t5.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    ema = Ema(params, args.ema)
    gen = torch.Generator(device="cpu").manual_seed(args.seed + 2)
    rng = np.random.default_rng(args.seed + 3)
    n = len(data["z"])
    img_ids = dit.image_ids(8, 8, device)
    txt_ids = torch.zeros(dit.TEXT_POSITIONS, 3, device=device)
    order, cursor = torch.randperm(n, generator=gen), 0
    total = args.steps if stop_after is None else stop_after
    bar = tqdm(range(total), desc="transformer", disable=not args.progress)
    t0 = time.time()
    for step in bar:
        if times is not None:
            times.append(time.perf_counter())
        lr = lr_at(step, args.steps, args.lr)
        for g in opt.param_groups:
            g["lr"] = lr
        if cursor + args.batch > n:
            order, cursor = torch.randperm(n, generator=gen), 0
        idx = order[cursor:cursor + args.batch].to(device)
        cursor += args.batch
        z, masks = data["z"][idx], data["masks"][idx]
        ids, owner, pooled = data["ids"][idx].clone(), data["owner"][idx].clone(), data["pooled"][idx].clone()
        drop = torch.from_numpy(rng.random(len(idx)) < args.drop_caption).to(device)
        ids[drop], owner[drop], pooled[drop] = data["empty_ids"], -1, data["empty_pooled"]
        noise = torch.randn(z.shape, generator=gen).to(device)
        sigma = torch.sigmoid(torch.randn(len(idx), generator=gen)).to(device)  # logit-normal (SD3)
        s = sigma.view(-1, 1, 1, 1)
        noisy = (1 - s) * z + s * noise
        store.clear()
        if text_store is not None:
            text_store.clear()
        with mixed_precision(device, args.bf16):
            text = t5(ids).last_hidden_state
            if concepts is not None:  # each concept alone through T5, its first token (as the capture embeds it)
                concept_set = args.concept_sets[step % len(args.concept_sets)]
                concepts.begin(t5(data["concept_ids"][concept_set]).last_hidden_state[:, 0])
            pred = transformer(hidden_states=dit.pack(noisy), timestep=sigma, pooled_projections=pooled,
                               encoder_hidden_states=text, txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0].float()
        mse = ((pred - dit.pack(noise - z)) ** 2).mean()
        loss = mse
        ground = torch.zeros((), device=device)
        if args.ground_weight > 0:
            ground = grounding_loss(store, masks, owner, args.pixel_weight)
            loss = loss + args.ground_weight * ground
        text_ground = torch.zeros((), device=device)
        if text_store is not None:
            text_ground = grounding_loss(text_store, masks, owner)
            loss = loss + args.text_ground_weight * text_ground
        concept = torch.zeros((), device=device)
        if concepts is not None:
            concept = concept_loss(concepts.end(), masks, data[concept_set][idx], len(CONCEPT_SETS[concept_set][1]), keep=~drop)
            loss = loss + args.concept_weight * concept
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update(step)
        if step % args.log_every == 0 or step == total - 1:
            bar.set_postfix(mse=f"{mse.item():.4f}", ground=f"{ground.item():.3f}", text=f"{text_ground.item():.3f}",
                            concept=f"{concept.item():.3f}", lr=f"{lr:.1e}")
            if not args.progress:
                log.info("step %d mse %.4f ground %.3f text ground %.3f concept %.3f (%.0f s)", step, mse.item(), ground.item(),
                         text_ground.item(), concept.item(), time.time() - t0)
    store.clear()
    if concepts is not None:
        concepts.remove()
    ema.apply()
    transformer.set_attn_processor(default_processors)
    return transformer.eval(), t5.eval()


def save(out: Path, vae, clip_tok, clip, t5_tok_dir: Path, t5, transformer, meta: dict, guidance: float) -> int:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
    from transformers import T5Tokenizer

    from bridge.models.defaults import write_defaults

    vae.register_to_config(shift_factor=0.0)  # FluxPipeline unshifts latents; this VAE's are centred by its scaling only
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False),
        vae=vae.to("cpu", torch.float16), text_encoder=clip.to("cpu", torch.float16), tokenizer=clip_tok,
        text_encoder_2=t5.to("cpu", torch.float16), tokenizer_2=T5Tokenizer.from_pretrained(t5_tok_dir),
        transformer=transformer.to("cpu", torch.float16),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="shapes-dit-", dir=out.parent))
    pipe.save_pretrained(tmp, safe_serialization=True)
    (tmp / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    write_defaults(tmp, guidance, 1, max_sequence_length=dit.TEXT_POSITIONS, size=64)
    shutil.copy(SHAPES / "latent_rgb.json", tmp / "latent_rgb.json")  # the same VAE: the same preview fit
    return replace_folder(tmp, out)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.bf16 = args.precision == "bf16" or (args.precision == "auto" and bf16_native(device))
    log.info("training on %s with %d threads, %s", device, torch.get_num_threads(), "bf16 autocast" if args.bf16 else "fp32")
    from transformers import T5Tokenizer

    torch.manual_seed(args.seed)
    t0 = time.time()
    vae, clip_tok, clip = load_reused(device)
    if args.init is not None:  # fine-tuning: a saved folder's weights and vocabulary
        transformer, t5, tok_dir = load_init(args.init, device)
        t5_tok = T5Tokenizer.from_pretrained(tok_dir)
    else:
        tok_dir = dit.write_caption_tokenizer(Path(tempfile.mkdtemp(prefix="shapes-dit-tok-")))
        t5_tok = T5Tokenizer.from_pretrained(tok_dir)
        t5 = dit.make_t5(len(t5_tok)).to(device)
        transformer = dit.make_transformer(args.dual, args.single, clip.config.hidden_size).to(device)
    enc = dit.T5CaptionEncoder(t5_tok)
    if args.estimate:
        data = encode_data(args, vae, clip_tok, clip, enc, device, 1024)
        data["concept_ids"] = concept_set_ids(t5_tok, device)
        times: list[float] = []
        train(args, data, t5, transformer, device, stop_after=9, times=times)
        each = (times[-1] - times[3]) / (len(times) - 4)
        log.info("estimate: %.2f s a step × %d = %.1f min (plus about %.1f min for the scenes)", each, args.steps,
                 each * args.steps / 60, args.scenes / 1024 * (time.time() - t0 - each * 9) / 60 * 0.5)
        return 0
    data = encode_data(args, vae, clip_tok, clip, enc, device, args.scenes)
    data["concept_ids"] = concept_set_ids(t5_tok, device)
    t_data = time.time() - t0
    log.info("%d scenes drawn and encoded in %.1f s", args.scenes, t_data)
    transformer, t5 = train(args, data, t5, transformer, device)
    seconds = time.time() - t0
    meta = {
        "command": "python -m bridge.builtin.train_shapes_dit " + " ".join(sys.argv[1:] if argv is None else argv),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "device": str(device), "threads": torch.get_num_threads(), "seconds": round(seconds, 1),
        "seconds_by_stage": {"scenes": round(t_data, 1), "transformer": round(seconds - t_data, 1)}, "torch": torch.__version__,
        "reused": "vae/ and text_encoder/ (CLIP) of builtin:shapes, frozen",
    }
    if args.init is not None and (args.init / "training.json").is_file():  # a fine-tune keeps its base's record
        meta["init_training"] = json.loads((args.init / "training.json").read_text())
    save(args.out, vae, clip_tok, clip, tok_dir, t5, transformer, meta, args.guidance)
    shutil.rmtree(tok_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
