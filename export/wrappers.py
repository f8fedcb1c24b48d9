"""Export-only module wrappers.

:class:`AutocastIO` runs a module under autocast behind float32 inputs and outputs (AOTInductor fp16).
The per-graph modules of each model family (e.g. SAM2's encoder and decoder halves) are declared by the
family itself (``ModelFamily.export_modules``).
"""

from __future__ import annotations

import torch
from torch import nn


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
