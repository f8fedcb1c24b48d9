"""Multimask selection: keep SAM2's highest-scoring candidate mask per input."""

from __future__ import annotations

import numpy as np

from samsem.errors import InputError


def select_best(masks: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pick the mask with the highest score for each batch item (ties -> lowest index).

    masks: (B, M, h, w) any dtype; scores: (B, M) float. Returns best (B, h, w) (masks' dtype) and
    best_scores (B,) (scores' dtype).
    """
    if masks.ndim != 4 or scores.ndim != 2 or masks.shape[:2] != scores.shape or scores.shape[1] < 1:
        raise InputError(
            None,
            f"masks {masks.shape} and scores {scores.shape} do not match",
            "masks (B, M, h, w) and scores (B, M) with M >= 1",
        )
    idx = np.argmax(scores, axis=1)  # first maximum on ties
    rows = np.arange(scores.shape[0])
    return masks[rows, idx], scores[rows, idx]
