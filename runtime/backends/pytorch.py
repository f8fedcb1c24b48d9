"""PyTorch backend: runs a model module (SAM2ImageModel, LiteNet) on named numpy arrays.

The module declares its io with ``engines()["model"]`` (:mod:`~samsem.runtime.models.iospec`):
``forward`` takes the spec's inputs in order and returns its outputs in order (one tensor, or a tuple).

Precision: "fp32" everywhere; "bf16" and "fp16" run under ``torch.autocast`` on CUDA. On CPU "bf16"
autocast is allowed too (it works with SAM2 and lets the reduced-precision path be tested without a
GPU, though it is not faster on most CPUs); "fp16" on CPU is a ConfigError. Outputs are always float32.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from samsem.errors import ConfigError
from samsem.runtime.backends.base import BackendEntry, EngineFiles
from samsem.runtime.models.checkpoint import torch_device
from samsem.runtime.models.iospec import EngineSpec

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class TorchBackend:
    """Backend over a torch model with an ``engines()`` method: named inputs -> named outputs of its
    "model" engine.

    SAM2ImageModel: {"image", "point_coords", "point_labels"} -> {"masks", "iou_scores"}; LiteNet:
    {"image"} -> {"logits"}. The model is moved to ``device`` and put in eval mode.
    """

    name = "torch"

    def __init__(self, model: nn.Module, device: str = "cpu", precision: str = "fp32") -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
        self.device = torch_device(device)
        if self.device.type == "cpu" and precision == "fp16":
            raise ConfigError("precision fp16 needs a CUDA device; use fp32 or bf16 on CPU")
        self.precision = precision
        self.model = model.to(self.device).eval()
        self.spec: EngineSpec = cast(Any, model).engines()["model"]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inputs keyed by the spec's input names (float32, validated) -> float32 outputs keyed by its
        output names (e.g. SAM2: masks (B, 3, S/4, S/4) logits, iou_scores (B, 3); lite: logits
        (B, 1, S, S))."""
        sizes = self.spec.check_inputs(inputs)
        dtype = PRECISIONS[self.precision]
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            args = [
                torch.from_numpy(np.ascontiguousarray(inputs[n])).to(self.device)
                for n in self.spec.input_names
            ]
            result = self.model(*args)
            tensors = result if isinstance(result, tuple) else (result,)
            out = {n: t.float().cpu().numpy() for n, t in zip(self.spec.output_names, tensors, strict=True)}
        self.spec.check_outputs(out, sizes)
        return out


def _unavailable(device: str, files: EngineFiles) -> str | None:
    return None  # torch is always installed; the device is checked when the backend is built


def _create(files: EngineFiles, device: str, precision: str) -> TorchBackend:
    from samsem.runtime.models.registry import load_model

    loaded = load_model(files.files["model"], device=device, family=files.family.name)
    return TorchBackend(loaded.module, device=device, precision=precision)


BACKEND = BackendEntry(
    name="torch",
    format="torch",
    fixed_precision=False,
    auto_on_cpu=True,
    unavailable=_unavailable,
    create=_create,
)
