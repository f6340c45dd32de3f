"""One device → host transfer per step: every map kind and the preview in a single copy.

The engine's step callback hands the step's device tensors here; this module packs them into
one flat float32 tensor, copies it to the host once (one synchronisation, not one per kind),
and splits it back into numpy arrays in each kind's dtype (bridge/mapkinds.py).
"""

from __future__ import annotations

import numpy as np
import torch

from . import mapkinds


def to_host(kinds: dict[str, torch.Tensor], preview: torch.Tensor) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``kinds`` (name → device tensor) and ``preview`` as host arrays: ({name: array}, float32 preview)."""
    parts = [t.reshape(-1).float() for t in kinds.values()] + [preview.reshape(-1).float()]
    packed = torch.cat(parts).cpu().numpy()
    out, offset = {}, 0
    for name, t in kinds.items():
        n = t.numel()
        out[name] = mapkinds.as_stored(name, packed[offset:offset + n].reshape(tuple(t.shape)))
        offset += n
    return out, packed[offset:].reshape(tuple(preview.shape))
