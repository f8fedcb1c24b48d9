"""Export-only modules: one ``nn.Module`` per exported graph, with io-spec argument order.

* :class:`SAM2Encoder` / :class:`SAM2Decoder`: the two halves of
  :class:`~samsem.runtime.models.sam2.SAM2ImageModel` (image -> features; features + points -> masks).
* :class:`ChannelLayerNorm` replaces SAM2's hand-written ``LayerNorm2d`` (mean, pow, mean, sqrt, div)
  by ``F.layer_norm`` over channels, so exporters emit one LayerNormalization op that TensorRT maps to a
  normalization layer (kept in FP32, see :mod:`samsem.export.trt_build`) instead of an FP16 pow/reduce
  chain that overflows. Same function, same parameters.
* :class:`AutocastIO` runs a module under autocast behind float32 inputs and outputs (AOTInductor fp16).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from samsem.errors import ConfigError


class ChannelLayerNorm(nn.Module):
    """LayerNorm over dim 1 of (B, C, H, W), sharing the weight/bias of the module it replaces."""

    def __init__(self, weight: nn.Parameter, bias: nn.Parameter, eps: float) -> None:
        super().__init__()
        self.weight = weight
        self.bias = bias
        self.eps = eps
        self.channels = int(weight.shape[0])  # a Python int: tracing keeps it constant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) -> (B, C, H, W), each pixel's channels normalised."""
        y = F.layer_norm(x.permute(0, 2, 3, 1), (self.channels,), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


def swap_layernorm2d(module: nn.Module) -> int:
    """Replace every sam2 ``LayerNorm2d`` inside ``module`` by :class:`ChannelLayerNorm` (in place).

    Returns the number replaced.
    """
    from sam2.modeling.sam2_utils import LayerNorm2d

    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LayerNorm2d):
                setattr(parent, name, ChannelLayerNorm(child.weight, child.bias, child.eps))
                count += 1
    return count


class SAM2Encoder(nn.Module):
    """image (B, 3, S, S) -> feat_s0, feat_s1, image_embed (io-spec "encoder")."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.model.encode(image)


class SAM2Decoder(nn.Module):
    """feat_s0, feat_s1, image_embed, point_coords (B, P, 2), point_labels (B, P) -> masks, iou_scores."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        feat_s0: torch.Tensor,
        feat_s1: torch.Tensor,
        image_embed: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.decode(feat_s0, feat_s1, image_embed, point_coords, point_labels)


class AutocastIO(nn.Module):
    """Run ``module`` under ``torch.autocast(dtype)`` (None: plain fp32); outputs come back float32.

    ``torch.export`` records the autocast casts, so an AOTInductor package of this wrapper keeps the
    io-spec's float32 inputs and outputs whatever its internal precision.
    """

    def __init__(self, module: nn.Module, dtype: torch.dtype | None) -> None:
        super().__init__()
        self.module = module
        self.dtype = dtype

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.autocast(args[0].device.type, dtype=self.dtype, enabled=self.dtype is not None):
            outs = self.module(*args)
        outs = (outs,) if isinstance(outs, torch.Tensor) else outs
        return tuple(o.float() for o in outs)


def graph_modules(family: str, model: nn.Module) -> dict[str, nn.Module]:
    """io-spec graph name -> module for a loaded model (SAM2ImageModel or LiteNet).

    SAM2: "encoder", "decoder" and the whole "model"; lite: "model". SAM2's LayerNorm2d modules are
    swapped for :class:`ChannelLayerNorm` first (in place).
    """
    if family == "sam2":
        swap_layernorm2d(model)
        return {"encoder": SAM2Encoder(model), "decoder": SAM2Decoder(model), "model": model}
    if family == "lite":
        return {"model": model}
    raise ConfigError(f"unknown model family {family!r}; expected sam2 or lite")
