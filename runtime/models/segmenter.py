"""The interfaces every model goes through, and what says which of them run on device tensors.

* :class:`Backend` — an engine (PyTorch, ONNX Runtime, TensorRT, AOTInductor): named numpy arrays in,
  named numpy arrays out, with the tensor names and shapes of the family's io-spec "model" graph;
  :class:`TensorBackend` also runs torch tensors that stay on its device (PyTorch, AOTInductor).
  Backends register in :mod:`samsem.runtime.backends.base`.
* :class:`Segmenter` — what the pipeline calls: a batch of square model inputs (plus point prompts for
  SAM2) in, per-pixel metal probabilities and one quality score per input out. A SAM2 or lite segmenter
  wraps a backend (pre-processing, multimask selection); the classical segmenter needs no backend.
  :class:`TensorSegmenter` also predicts on tensors of a device; the pipeline runs its device-resident
  stages when every segmenter it uses declares the same CUDA device (:func:`tensor_device_of`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from samsem.errors import ConfigError


@runtime_checkable
class Backend(Protocol):
    """An inference engine for one model."""

    name: str

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; inputs and outputs are keyed by the io-spec tensor names."""
        ...


@runtime_checkable
class TensorBackend(Backend, Protocol):
    """A backend that also runs on torch tensors of its ``device`` (a ``torch.device``)."""

    device: Any

    def run_tensors(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """:meth:`run` on float32 tensors of :attr:`device`; the outputs stay there."""
        ...


@runtime_checkable
class Segmenter(Protocol):
    """A model that turns square inputs into metal probabilities.

    ``input_size`` is the side S of the square input the pipeline resizes images and patches to;
    ``uses_prompts`` tells the pipeline whether to compute point prompts for it.
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


@runtime_checkable
class TensorSegmenter(Segmenter, Protocol):
    """A segmenter with a tensor path: :meth:`predict_tensors` is :meth:`predict` on torch tensors that stay
    on ``tensor_device``."""

    @property
    def tensor_device(self) -> str | None:
        """The torch device ("cuda:0", "cpu") its tensors live on; None when it has none right now (a SAM2
        or lite segmenter over a numpy-only backend)."""
        ...

    def predict_tensors(self, images: Any, points: Any | None) -> tuple[Any, Any]:
        """:meth:`predict` on float32 tensors of ``tensor_device``: images (B, S, S), points (B, P, 2) or
        None -> probs (B, h, w), scores (B,) on the same device."""
        ...


def tensor_device_of(segmenter: Segmenter) -> str | None:
    """The device a segmenter predicts on tensors of, or None when it has no tensor path."""
    return segmenter.tensor_device if isinstance(segmenter, TensorSegmenter) else None


class BackendSegmenter:
    """What the segmenters over a backend share: ``backend``, ``input_size`` and the tensor path, which they
    have when the backend is a :class:`TensorBackend` (then :attr:`tensor_device` is its device)."""

    def __init__(self, backend: Backend, input_size: int) -> None:
        self.backend = backend
        self.input_size = input_size

    @property
    def tensor_device(self) -> str | None:
        """The backend's torch device when it runs on tensors, else None."""
        return str(self.backend.device) if isinstance(self.backend, TensorBackend) else None

    def tensor_backend(self) -> TensorBackend:
        """The backend, for ``predict_tensors``; ConfigError when it runs numpy arrays only."""
        if not isinstance(self.backend, TensorBackend):
            raise ConfigError(f"the {self.backend.name} backend runs numpy arrays only, not device tensors")
        return self.backend


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Elementwise logistic function in float32, without overflow warnings."""
    x = np.clip(x.astype(np.float32, copy=False), -80.0, 80.0)  # exp(80) and 1/exp(80) are normal float32
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32, copy=False)
