"""PyTorch backend: runs a :class:`~samsem.runtime.sam2_model.SAM2ImageModel` on named numpy arrays.

Precision: "fp32" everywhere; "bf16" and "fp16" run under ``torch.autocast`` on CUDA. On CPU "bf16"
autocast is allowed too (it works with SAM2 and lets the reduced-precision path be tested without a
GPU, though it is not faster on most CPUs); "fp16" on CPU is a ConfigError. Outputs are always float32.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from samsem.errors import ConfigError
from samsem.runtime.sam2_model import SAM2ImageModel, torch_device

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class TorchBackend:
    """Backend over a SAM2ImageModel: {"image", "point_coords", "point_labels"} -> {"masks", "iou_scores"}.

    Input/output names and shapes are those of the model's io-spec ("model" engine); the model is moved
    to ``device`` and put in eval mode.
    """

    name = "torch"

    def __init__(self, model: SAM2ImageModel, device: str = "cpu", precision: str = "fp32") -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
        self.device = torch_device(device)
        if self.device.type == "cpu" and precision == "fp16":
            raise ConfigError("precision fp16 needs a CUDA device; use fp32 or bf16 on CPU")
        self.precision = precision
        self.model = model.to(self.device).eval()
        self.spec = model.geometry.engines()["model"]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """image (B, 3, S, S), point_coords (B, P, 2), point_labels (B, P), all float32 ->
        masks (B, 3, S/4, S/4) float32 logits, iou_scores (B, 3) float32."""
        sizes = self.spec.check_inputs(inputs)
        dtype = PRECISIONS[self.precision]
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            args = [
                torch.from_numpy(np.ascontiguousarray(inputs[n])).to(self.device)
                for n in self.spec.input_names
            ]
            masks, iou = self.model(*args)
            out = {"masks": masks.float().cpu().numpy(), "iou_scores": iou.float().cpu().numpy()}
        self.spec.check_outputs(out, sizes)
        return out
