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
    unknown = sorted(set(data) - {"guidance"})
    if unknown:
        raise ModelError(f"{path} has unknown keys {unknown}; the only key is 'guidance'")
    out: dict[str, float] = {}
    if "guidance" in data:
        g = data["guidance"]
        if not is_guidance(g):
            raise ModelError(f"{path}: 'guidance' must be a number from 0 to {MAX_GUIDANCE:g}, got {g!r}")
        out["guidance"] = float(g)
    return out


def write_defaults(folder: str | Path, guidance: float) -> Path:
    path = Path(folder) / FILENAME
    path.write_text(json.dumps({"guidance": guidance}, indent=2) + "\n", encoding="utf-8")
    read_defaults(folder)  # refuse to leave a file the loader would reject
    return path
