"""The two small interfaces every model goes through.

* :class:`Backend` — an engine (PyTorch, ONNX Runtime, TensorRT, AOTInductor): named numpy arrays in,
  named numpy arrays out, with the tensor names and shapes of :mod:`samsem.runtime.models.iospec`.
* :class:`Segmenter` — what the pipeline calls: a batch of square model inputs (plus point prompts for
  SAM2) in, per-pixel metal probabilities and one quality score per input out. A SAM2 segmenter wraps a
  backend (pre-processing, multimask selection); the classical segmenter needs no backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Backend(Protocol):
    """An inference engine for one model."""

    name: str

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; inputs and outputs are keyed by the io-spec tensor names."""
        ...


@runtime_checkable
class Segmenter(Protocol):
    """A model that turns square inputs into metal probabilities.

    ``input_size`` is the side S of the square input the pipeline resizes images and patches to;
    ``uses_prompts`` tells the pipeline whether to compute point prompts for it. A segmenter whose
    backend runs on torch tensors also has ``predict_tensors`` (the same on tensors that stay on its
    device) and ``tensor_device``; the pipeline's device-resident stages use them.
    """

    input_size: int
    uses_prompts: bool

    def predict(self, images: np.ndarray, points: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Segment a batch.

        images: (B, S, S) float32 in [0, 1]; points: (B, P, 2) float32 (x, y) in input pixel
        coordinates, or None when ``uses_prompts`` is false. Returns ``(probs, scores)``: probs
        (B, h, w) float32 in [0, 1] at the model's output resolution (h == w, any size, e.g. S/4 for
        SAM2's low-resolution masks), scores (B,) float32 (the kept mask's predicted quality, 1.0 when
        the model has none).
        """
        ...


def tensor_device_of(backend: object) -> str | None:
    """Where a backend keeps tensors when it can run on them (``run_tensors``): its torch device as a
    string ("cuda:0", "cpu"); None for backends that take numpy arrays only."""
    if not callable(getattr(backend, "run_tensors", None)):
        return None
    device = getattr(backend, "device", None)
    return None if device is None else str(device)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Elementwise logistic function in float32, without overflow warnings."""
    x = np.clip(x.astype(np.float32, copy=False), -80.0, 80.0)  # exp(80) and 1/exp(80) are normal float32
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32, copy=False)
