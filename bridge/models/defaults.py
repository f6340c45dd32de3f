"""Generation defaults that a pipeline folder recommends for itself.

Diffusers folders have no place for a recommended guidance scale, yet the right value depends on
the model: Stable Diffusion 1.x wants about 7.5, while a small model trained on a narrow domain
over-saturates at that scale and draws better at 2–4.  A folder may therefore carry
``bridge_defaults.json``, e.g. ``{"guidance": 3.0}``, which the engine uses whenever a request
leaves that setting out.  A request that names a value always wins.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import ModelError
from ..limits import LIMITS

FILENAME = "bridge_defaults.json"
MAX_GUIDANCE = LIMITS.guidance.hi  # the bound of every guidance a request may carry (bridge/limits.py)


def is_guidance(g) -> bool:
    """A finite number in 0..MAX_GUIDANCE (not a bool, which JSON and Python would let through)."""
    return not isinstance(g, bool) and isinstance(g, (int, float)) and math.isfinite(g) and 0 <= g <= MAX_GUIDANCE


def is_vae_every(k) -> bool:
    return not isinstance(k, bool) and isinstance(k, int) and LIMITS.vae_every.lo <= k <= LIMITS.vae_every.hi


def is_text_positions(n) -> bool:
    return not isinstance(n, bool) and isinstance(n, int) and 1 <= n <= 512


def is_side(n) -> bool:
    return not isinstance(n, bool) and isinstance(n, int) and n in LIMITS.width


# key → (check, what a valid value is, type it is read as)
KEYS = {
    "guidance": (is_guidance, f"a number from 0 to {MAX_GUIDANCE:g}", float),
    # A model whose VAE is cheap (the built-in shapes model decodes 64×64) can afford a full
    # decode of every step's preview, which shows the picture in its true colours.
    "vae_every": (is_vae_every, f"a whole number from {LIMITS.vae_every.lo} to {LIMITS.vae_every.hi}", int),
    # Transformers whose pipelines pad the T5 text to a fixed length (Flux 512, SD3 256): a small
    # model trained on short captions asks for fewer positions, and every step attends to them.
    "max_sequence_length": (is_text_positions, "a whole number from 1 to 512", int),
    # The side the model was trained at, where its pipeline has no sample size of its own (Flux's
    # pipeline assumes 1024).
    "size": (is_side, f"a multiple of {LIMITS.width.multiple} from {LIMITS.width.lo} to {LIMITS.width.hi}", int),
}


def read_defaults(folder: str | Path) -> dict[str, float]:
    """The folder's defaults ({} without the file); ModelError naming the file when it is wrong."""
    path = Path(folder) / FILENAME
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} must hold a JSON object such as {{\"guidance\": 3.0}}")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ModelError(f"{path} has unknown keys {unknown}; the keys are {', '.join(repr(k) for k in KEYS)}")
    out: dict[str, float] = {}
    for key, (check, valid, kind) in KEYS.items():
        if key in data:
            if not check(data[key]):
                raise ModelError(f"{path}: {key!r} must be {valid}, got {data[key]!r}")
            out[key] = kind(data[key])
    return out


def write_defaults(folder: str | Path, guidance: float, vae_every: int | None = None, **more) -> Path:
    path = Path(folder) / FILENAME
    data = {"guidance": guidance, **({} if vae_every is None else {"vae_every": vae_every}), **more}
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    read_defaults(folder)  # refuse to leave a file the loader would reject
    return path
