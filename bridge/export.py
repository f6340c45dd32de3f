"""Exports of a recorded run: per-word heat maps, overlays, DAAM masks and mass curves.

    maps/     NN_word.png   the word's final DAAM map, normalised to its peak, colormapped
    overlays/ NN_word.png   that heat map over the final image (opacity × heat per pixel)
    masks/    NN_word.png   Eqn. 7 of the DAAM paper: white where D ≥ τ·max D
    curves.csv              per step: phase, each word's attention mass and mask IoU with the final
    curves.png              the mass curves, with each word's stabilisation step marked
    stability.csv           per word: stabilisation step (see bridge/masks.py), the fraction of the
                            run it came at, the lowest IoU with the final mask from then on, final mass
    self/     ID.png        per self-attention query region (render --region): its map summed over the
                            steps that had it, over the final image, the region outlined
    self/curves.csv         per step and region: the share of the region's map that lies inside the
                            region itself (how much it looks at itself as the image forms)
                            (--region: regions chosen now, from a run recorded with --self-grid;
                            --diffuse N adds ID_diffused.png, its diffused attention)
    concepts/ NN_name.png   per concept (render --concepts): its map averaged over the steps that had it
                            (ConceptAttention averages over time), over the final image
    concepts/segments.png   argmax over the last step's concepts of those averages (each ÷ its peak), in its
                            colour over the image: a segmentation (ConceptAttention's and OVAM's)
    concepts/masks/NN_name.png  white where that concept wins the argmax
    concepts/curves.csv     per step: each concept's share of the step's concept maps

Images are ``size`` pixels on the long side (default 512: the built-in model draws 64×64, too
small to look at), the final image resized with Lanczos.  The DAAM map is the cumulative map of
the last recorded step (daam.npy), upsampled bicubically to that size and clamped at 0 before
thresholding, as the paper thresholds the image-sized map (``size=0``: the image's own size).
NN is the word's index in the run, so repeated words keep distinct files.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from . import masks
from .errors import UserError
from .recording import Recording, recording_with_steps
from .timelapse import colormaps, heatmap
from .timelapse.plot import LinePlot

log = logging.getLogger(__name__)

WHAT = ("maps", "overlays", "masks", "curves", "self", "concepts")
MAX_SIZE = 8192


class ExportError(UserError):
    """An export option that cannot work with this recording."""


@dataclass(frozen=True)
class ExportOptions:
    what: tuple[str, ...] = WHAT
    tau: float = masks.DEFAULT_TAU
    min_iou: float = masks.DEFAULT_MIN_IOU
    colormap: str = "inferno"
    opacity: float = 0.6
    size: int = 512  # long side of the image exports in pixels; 0: the recorded image's size
    regions: tuple = ()  # regions chosen after the run (bridge.regions.Region), from its self grid
    diffuse: int = 0  # > 0: also each region's diffused attention, this many expansions (bridge/selfgrid.py)

    def check(self) -> None:
        bad = [w for w in self.what if w not in WHAT]
        if bad or not self.what:
            raise ExportError(f"--what takes a comma-separated list of {', '.join(WHAT)}; got {','.join(self.what) or 'nothing'}")
        if not 0.0 <= self.tau <= 1.0:
            raise ExportError(f"tau must be within 0..1 (the paper uses 0.4), got {self.tau}")
        if not 0.0 < self.min_iou <= 1.0:
            raise ExportError(f"the stabilisation IoU must be within 0..1, got {self.min_iou}")
        if self.colormap not in colormaps.COLORMAPS:
            raise ExportError(f"unknown colormap {self.colormap!r}; choose one of {', '.join(colormaps.COLORMAPS)}")
        if isinstance(self.diffuse, bool) or not isinstance(self.diffuse, int) or not 0 <= self.diffuse <= 20:
            raise ExportError(f"--diffuse takes 0 (off) to 20 expansions, got {self.diffuse}")
        if self.diffuse and not self.regions:
            raise ExportError("--diffuse needs --region: the regions to diffuse from")
        if not 0.0 <= self.opacity <= 1.0:
            raise ExportError(f"opacity must be within 0..1, got {self.opacity}")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 0 <= self.size <= MAX_SIZE:
            raise ExportError(f"size must be a whole number of pixels within 0..{MAX_SIZE} (0: the image's own), got {self.size}")


def file_stem(index: int, word: str) -> str:
    """``03_apple``; characters unsafe in file names become '_', punctuation words get a name."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", word).strip("_")
    if not safe:
        safe = f"u{ord(word[0]):04x}" if word else "empty"  # e.g. "," → u002c
    return f"{index:02d}_{safe}"


def export(recording: str | Path | Recording, out: str | Path, options: ExportOptions = ExportOptions(),
           progress: bool = True) -> dict:
    """Write the chosen exports into ``out`` (created); returns {kind: [paths]} and stability."""
    options.check()
    rec = recording_with_steps(recording, "export", ExportError)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    words = rec.start.words
    written: dict[str, list[str]] = {}
    image = _resized(_final_image(rec), options.size)
    size = image.shape[:2]
    daam = np.asarray(rec.daam(), dtype=np.float32)

    image_kinds = [w for w in ("maps", "overlays", "masks") if w in options.what]
    if image_kinds:
        for kind in image_kinds:
            (out / kind).mkdir(exist_ok=True)
        for i, word in enumerate(tqdm(words, desc="export", unit="word", disable=not progress)):
            d = heatmap.upsample(daam[i], size)
            h = heatmap.normalized(d)
            stem = file_stem(i, word) + ".png"
            if "maps" in image_kinds:
                _save(out / "maps" / stem, heatmap.heat_image(h, options.colormap), written, "maps")
            if "overlays" in image_kinds:
                _save(out / "overlays" / stem, heatmap.overlay(image, h, options.colormap, options.opacity), written, "overlays")
            if "masks" in image_kinds:
                m = masks.daam_mask(d, options.tau).astype(np.uint8) * 255
                _save(out / "masks" / stem, m, written, "masks")
    result: dict = {"files": written, "truncated": rec.truncated, "steps": len(rec)}
    if "self" in options.what:
        _regions(rec, out, image, options, written)
    if "concepts" in options.what:
        _concepts(rec, out, image, options, written)
    if "curves" in options.what:
        result["stability"] = _curves(rec, out, options, written)
    return result


def _live_region_maps(rec: Recording):
    """Per step (step, [(id, region dict, map)]) of the regions the run itself recorded."""
    for i, line in enumerate(rec.steps):
        regions = line.get("regions") or ()
        if regions:
            maps = np.asarray(rec.map_array("self", i), dtype=np.float32)
            yield int(line["step"]), [(str(r.get("id", k)), r, maps[k]) for k, r in enumerate(regions)]


def _grid_region_maps(rec: Recording, regions):
    """The same for regions chosen now, from the run's recorded self grid."""
    from . import selfgrid

    hw = (rec.start.height, rec.start.width)
    for i, line in enumerate(rec.steps):
        if "selfgrid" in line.get("kinds", ()):
            matrix = rec.map_array("selfgrid", i)
            yield int(line["step"]), [(r.id, r.to_dict(), selfgrid.region_map(matrix, r, hw)) for r in regions]


def _regions(rec: Recording, out: Path, image: np.ndarray, options: ExportOptions, written: dict) -> None:
    """One overlay per query region — those the run recorded, or ``options.regions`` from its
    self grid — and their curves (none: nothing is written)."""
    from .regions import from_dict

    if options.regions and not any("selfgrid" in line.get("kinds", ()) for line in rec.steps):
        raise ExportError("this recording has no self grid to choose regions from after the run; record it "
                          "with render --self-grid 16 (or the self_grid preset key)")
    steps = _grid_region_maps(rec, options.regions) if options.regions else _live_region_maps(rec)
    sums: dict[str, np.ndarray] = {}
    shapes: dict[str, dict] = {}
    inside: list[tuple[int, dict[str, float]]] = []  # (step, {id: share of its map inside itself})
    hw = (rec.start.height, rec.start.width)
    for step, maps in steps:
        shares = {}
        for rid, region, m in maps:
            sums[rid] = sums.get(rid, 0) + m
            shapes[rid] = region
            cover = from_dict(region).coverage(*m.shape, hw) > 0
            total = float(np.clip(m, 0, None).sum())
            shares[rid] = float(np.clip(m, 0, None).reshape(-1)[cover].sum()) / total if total > 0 else 0.0
        inside.append((step, shares))
    if not sums:
        return
    (out / "self").mkdir(exist_ok=True)
    with open(out / "self" / "curves.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["step"] + [f"inside_{rid}" for rid in sums])
        for step, shares in inside:
            w.writerow([step] + [f"{shares[rid]:.4f}" if rid in shares else "" for rid in sums])
    written.setdefault("self", []).append(str(out / "self" / "curves.csv"))
    pictures = [(rid, total, "") for rid, total in sums.items()]
    if options.diffuse and options.regions:
        from . import selfgrid

        matrix = sum(rec.map_array("selfgrid", i).astype(np.float64) for i, line in enumerate(rec.steps)
                     if "selfgrid" in line.get("kinds", ()))
        pictures += [(r.id, selfgrid.diffuse(matrix, r, hw, options.diffuse), "_diffused") for r in options.regions]
    for rid, total, suffix in sorted(pictures, key=lambda p: (p[0], p[2])):
        _save(out / "self" / (file_stem(0, rid)[3:] + suffix + ".png"),
              _region_picture(image, total, from_dict(shapes[rid]), rec.start.width, options), written, "self")


def concept_averages(rec: Recording) -> tuple[tuple[str, ...], dict[str, np.ndarray], list[tuple[int, dict[str, float]]]]:
    """(the last step's concepts, {name: its map averaged over the steps that had it},
    [(step, {name: its share of that step's concept maps})])."""
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    shares, last = [], ()
    for i, line in enumerate(rec.steps):
        names = tuple(line.get("concepts") or ())
        if not names:
            continue
        maps = np.asarray(rec.map_array("concepts", i), dtype=np.float32)
        mass = np.clip(maps, 0, None).sum(axis=(1, 2))
        total = float(mass.sum())
        shares.append((int(line["step"]), {n: float(m) / total if total > 0 else 0.0 for n, m in zip(names, mass)}))
        for name, m in zip(names, maps):
            sums[name] = sums.get(name, 0) + m
            counts[name] = counts.get(name, 0) + 1
        last = names
    return last, {n: sums[n] / counts[n] for n in sums}, shares


def segments(maps: np.ndarray) -> np.ndarray:
    """(concepts, h, w) maps → (h, w) index of the concept that holds each pixel most, each map
    ÷ its own peak first (as the viewer draws them: OVAM's maps are sums on different scales)."""
    maps = np.asarray(maps, dtype=np.float32)
    peak = maps.reshape(len(maps), -1).max(axis=1)
    return np.argmax(maps / np.where(peak > 0, peak, 1)[:, None, None], axis=0)


def segment_colours(count: int) -> np.ndarray:
    """(count, 3) float32 RGB of the segments: the word palette in concept order."""
    from .palette import WORDS

    return np.array([WORDS[i % len(WORDS)] for i in range(count)], dtype=np.float32)


def segment_picture(image: np.ndarray, won: np.ndarray, count: int) -> np.ndarray:
    """The argmax segmentation ``won`` (h, w) drawn at 55 % over ``image`` (h, w, 3), uint8."""
    picture = 0.45 * image.astype(np.float32) + 0.55 * segment_colours(count)[won]
    return np.clip(np.rint(picture), 0, 255).astype(np.uint8)


def _concepts(rec: Recording, out: Path, image: np.ndarray, options: ExportOptions, written: dict) -> None:
    """Per concept its averaged map over the image, the argmax segmentation and its masks, the
    share curves (a run without concepts: nothing is written)."""
    last, means, shares = concept_averages(rec)
    if not means:
        return
    folder = out / "concepts"
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    names = list(means)
    with open(folder / "curves.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["step"] + [f"share_{file_stem(i, n)}" for i, n in enumerate(names)])
        for step, share in shares:
            w.writerow([step] + [f"{share[n]:.4f}" if n in share else "" for n in names])
    written.setdefault("concepts", []).append(str(folder / "curves.csv"))
    size = image.shape[:2]
    for i, name in enumerate(names):
        h = heatmap.normalized(heatmap.upsample(means[name], size))
        _save(folder / (file_stem(i, name) + ".png"), heatmap.overlay(image, h, options.colormap, options.opacity),
              written, "concepts")
    stack = np.stack([heatmap.upsample(means[n], size) for n in last])
    won = segments(stack)
    _save(folder / "segments.png", segment_picture(image, won, len(last)), written, "concepts")
    colours = segment_colours(len(last))
    key = [{"concept": name, "colour": "#%02x%02x%02x" % tuple(int(c) for c in colours[k]),
            "mask": f"masks/{file_stem(names.index(name), name)}.png"} for k, name in enumerate(last)]
    (folder / "segments.json").write_text(json.dumps({"segments": key}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    written.setdefault("concepts", []).append(str(folder / "segments.json"))
    for k, name in enumerate(last):
        _save(folder / "masks" / (file_stem(names.index(name), name) + ".png"), (won == k).astype(np.uint8) * 255,
              written, "concepts")


def _region_picture(image: np.ndarray, total: np.ndarray, region, width: int, options: ExportOptions) -> np.ndarray:
    """A region's map over the image, the region outlined in white."""
    picture = heatmap.overlay(image, heatmap.normalized(heatmap.upsample(total, image.shape[:2])), options.colormap, options.opacity)
    return heatmap.outline_region(picture, region, image.shape[1] / width)


def _final_image(rec: Recording) -> np.ndarray:
    """The finished image, or the last preview when the run did not finish."""
    image = rec.final_image()
    if image is None:
        image = rec.frame(len(rec) - 1).preview
    return image


def _resized(image: np.ndarray, long_side: int) -> np.ndarray:
    h, w = image.shape[:2]
    if not long_side or max(h, w) == long_side:
        return image
    scale = long_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS))


def _save(path: Path, array: np.ndarray, written: dict, kind: str) -> None:
    Image.fromarray(array).save(path)
    written.setdefault(kind, []).append(str(path))


def _curves(rec: Recording, out: Path, options: ExportOptions, written: dict) -> list[dict]:
    words = rec.start.words
    steps = np.array([int(line["step"]) for line in rec.steps])
    mass = np.array([line["mass"] for line in rec.steps], dtype=np.float64)  # (S, W), as sent live
    cumulative = np.stack([rec.map_array("cumulative", i) for i in range(len(rec))])
    ious = masks.iou_with_final(cumulative, options.tau)  # (S, W), at map resolution
    stable = masks.stabilisation_steps(ious, steps, options.min_iou)
    last = int(steps[-1]) if len(steps) else 0

    with open(out / "curves.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["step", "phase"] + [f"mass_{file_stem(i, x)}" for i, x in enumerate(words)]
                   + [f"iou_{file_stem(i, x)}" for i, x in enumerate(words)])
        for k, line in enumerate(rec.steps):
            w.writerow([int(line["step"]), line["phase"]] + [f"{v:.6f}" for v in mass[k]] + [f"{v:.4f}" for v in ious[k]])
    with open(out / "stability.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["index", "word", "stable_step", "stable_at", "iou_after", "final_mass", "tau", "iou_threshold"])
        for i, word in enumerate(words):
            if stable[i] is None:
                at = after = ""
            else:  # measured: where in the run, and the lowest IoU with the final mask from there on
                at = f"{stable[i] / last:.3f}" if last else "0.000"
                after = f"{ious[steps >= stable[i], i].min():.4f}"
            w.writerow([i, word, "" if stable[i] is None else stable[i], at, after, f"{mass[-1, i]:.6f}",
                        options.tau, options.min_iou])
    written.setdefault("curves", []).extend([str(out / "curves.csv"), str(out / "stability.csv")])

    plot = LinePlot(width=960, height=540, title=f"attention mass per step: {rec.start.prompt}",
                    x_label="step", y_label="mass", x_max=max(rec.start.steps - 1, 1))
    for i, word in enumerate(words):
        plot.add(steps, mass[:, i], label=word, color=colormaps.word_color(i), marker_x=stable[i])
    plot.save(out / "curves.png")
    written["curves"].append(str(out / "curves.png"))
    return [{"index": i, "word": word, "stable_step": stable[i]} for i, word in enumerate(words)]
