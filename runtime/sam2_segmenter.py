"""SAM2 segmenter: grayscale inputs + positive point prompts -> probability of the best of SAM2's masks."""

from __future__ import annotations

import numpy as np

from samsem.errors import InputError
from samsem.runtime.multimask import select_best
from samsem.runtime.sam2_model import PIXEL_MEAN, PIXEL_STD
from samsem.runtime.segmenter import Backend

_MEAN = np.asarray(PIXEL_MEAN, np.float32).reshape(1, 3, 1, 1)
_STD = np.asarray(PIXEL_STD, np.float32).reshape(1, 3, 1, 1)


def normalize(images: np.ndarray) -> np.ndarray:
    """images (B, S, S) float32 in [0, 1] -> (B, 3, S, S) float32, gray replicated to RGB and normalised
    with SAM2's ImageNet mean/std (as SAM2ImagePredictor's transforms do after ToTensor)."""
    return ((images[:, None, :, :] - _MEAN) / _STD).astype(np.float32, copy=False)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Elementwise logistic function in float32, without overflow warnings."""
    x = np.clip(x.astype(np.float32, copy=False), -80.0, 80.0)  # exp(80) and 1/exp(80) are normal float32
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32, copy=False)


class SAM2Segmenter:
    """Segmenter over a SAM2 backend (io-spec "model" engine); every point prompt is positive."""

    uses_prompts = True

    def __init__(self, backend: Backend, input_size: int) -> None:
        self.backend = backend
        self.input_size = input_size

    def predict(self, images: np.ndarray, points: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """images (B, S, S) float32 in [0, 1], points (B, P, 2) float32 (x, y) input pixels ->
        probs (B, S/4, S/4) float32 (sigmoid of the best-scoring mask's logits), scores (B,) float32."""
        s = self.input_size
        if images.ndim != 3 or images.shape[1:] != (s, s):
            raise InputError(None, f"SAM2 images have shape {images.shape}", f"(B, {s}, {s})")
        if points is None:
            raise InputError(None, "SAM2 needs point prompts, got None", "points (B, P, 2)")
        if points.ndim != 3 or points.shape[0] != images.shape[0] or points.shape[2] != 2:
            raise InputError(None, f"SAM2 points have shape {points.shape}", f"({images.shape[0]}, P, 2)")
        coords = np.ascontiguousarray(points, dtype=np.float32)
        out = self.backend.run(
            {
                "image": normalize(np.asarray(images, dtype=np.float32)),
                "point_coords": coords,
                "point_labels": np.ones(coords.shape[:2], np.float32),
            }
        )
        best, scores = select_best(out["masks"], out["iou_scores"])
        return sigmoid(best), scores.astype(np.float32, copy=False)
