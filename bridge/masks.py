"""DAAM binary masks (Eqn. 7 of Tang et al. 2023), their IoU, and when a word's map settles.

Eqn. 7:  D_k^I[x, y] = 1( D_k^R[x, y] ≥ τ · max_{i,j} D_k^R[i, j] )  with D_k^R the word's
DAAM map (attention summed over heads, layers and steps) and τ = 0.4 the paper's best value.
A map with no attention at all (max ≤ 0) gives an empty mask: nothing is attributed to it.

Stabilisation step of a word: the first step s such that for every step t ≥ s the mask of the
DAAM map so far (the cumulative map at t) has IoU ≥ ``min_iou`` (0.9) with the mask of the
final DAAM map.  It is the step after which stopping the run would no longer change where the
word is said to be.
"""

from __future__ import annotations

import numpy as np

DEFAULT_TAU = 0.4
DEFAULT_MIN_IOU = 0.9


def daam_mask(m: np.ndarray, tau: float = DEFAULT_TAU) -> np.ndarray:
    """Eqn. 7 on the last two axes of ``m`` (one map (h, w) or a stack (W, h, w)), bool."""
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must be within 0..1, got {tau}")
    m = np.asarray(m, dtype=np.float32)
    peak = m.max(axis=(-2, -1), keepdims=True)
    return (m >= tau * peak) & (peak > 0)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union over the last two axes; two empty masks agree fully (1.0)."""
    inter = np.logical_and(a, b).sum(axis=(-2, -1))
    union = np.logical_or(a, b).sum(axis=(-2, -1))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def iou_with_final(cumulative: np.ndarray, tau: float = DEFAULT_TAU) -> np.ndarray:
    """IoU per (step, word) of each step's cumulative mask with the last step's, shape (S, W)."""
    masks = daam_mask(cumulative, tau)  # (S, W, h, w)
    return iou(masks, masks[-1][None])


def stabilisation_steps(ious: np.ndarray, steps: np.ndarray, min_iou: float = DEFAULT_MIN_IOU) -> list[int | None]:
    """Per word, the first step from which the IoU stays ≥ ``min_iou`` to the end.

    ``ious`` is (S, W) as from :func:`iou_with_final`, ``steps`` the S step numbers.  With no
    steps the answer is None for every word.
    """
    ious = np.asarray(ious)
    if ious.shape[0] == 0:
        return [None] * ious.shape[1]
    ok = ious >= min_iou
    # stays_ok[t] = all(ok[t:]), computed from the end.
    stays_ok = np.flip(np.logical_and.accumulate(np.flip(ok, axis=0), axis=0), axis=0)
    out: list[int | None] = []
    for w in range(ious.shape[1]):
        hits = np.flatnonzero(stays_ok[:, w])
        out.append(int(steps[hits[0]]) if hits.size else None)
    return out
