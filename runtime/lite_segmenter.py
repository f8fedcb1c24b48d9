"""Lite segmenter: grayscale inputs -> per-pixel metal probability from a lite-family backend, no prompts."""

from __future__ import annotations

import numpy as np

from samsem.errors import InputError
from samsem.runtime.sam2_segmenter import sigmoid
from samsem.runtime.segmenter import Backend


def confidence(probs: np.ndarray) -> np.ndarray:
    """Mean per-pixel certainty: probs (B, h, w) float32 -> (B,) float32 mean of max(p, 1 - p).

    0.5 when every pixel is a coin flip, 1.0 when every pixel is certain (0 or 1).
    """
    return np.maximum(probs, 1.0 - probs).mean(axis=(1, 2), dtype=np.float64).astype(np.float32)


class LiteSegmenter:
    """Segmenter over a lite backend (io-spec "model": image (B, 1, S, S) -> logits (B, 1, S, S)).

    The image goes to the model as it is (the model normalises it internally); ``points`` are ignored.
    """

    uses_prompts = False

    def __init__(self, backend: Backend, input_size: int) -> None:
        self.backend = backend
        self.input_size = input_size

    def predict(self, images: np.ndarray, points: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """images (B, S, S) float32 in [0, 1] -> probs (B, S, S) float32 (sigmoid of the logits),
        scores (B,) float32 (:func:`confidence`, in [0.5, 1])."""
        s = self.input_size
        if images.ndim != 3 or images.shape[1:] != (s, s):
            raise InputError(None, f"lite images have shape {images.shape}", f"(B, {s}, {s})")
        image = np.ascontiguousarray(images[:, None], dtype=np.float32)
        probs = sigmoid(self.backend.run({"image": image})["logits"][:, 0])
        return probs, confidence(probs)
