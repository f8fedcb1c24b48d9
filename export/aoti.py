"""AOTInductor packages: ``torch.export`` of the whole model + ``torch._inductor.aoti_compile_and_package``.

The package takes the ``model`` io-spec inputs (float32) with dynamic batch (and point count) up to the
bundle's limits and returns float32 outputs; with fp16 the model runs under autocast inside
(:class:`~samsem.export.wrappers.AutocastIO`). A package runs only on the device type it was compiled
for (the manifest records it). Compiling needs a C++ compiler; it takes minutes even for the tiny model
on a CPU.
"""

from __future__ import annotations

import copy
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from samsem.errors import ConfigError
from samsem.export.onnx_export import example_inputs
from samsem.export.wrappers import AutocastIO
from samsem.runtime.bundle.manifest import Limits
from samsem.runtime.models.checkpoint import torch_device
from samsem.runtime.models.iospec import BATCH, POINTS, EngineSpec


def compile_aoti(
    module: nn.Module,
    spec: EngineSpec,
    path: str | Path,
    *,
    limits: Limits,
    device: str = "cuda",
    fp16: bool = False,
) -> dict[str, Any]:
    """Export ``module`` (inputs/outputs in ``spec`` order) and compile it into a .pt2 package at ``path``."""
    from torch._inductor import aoti_compile_and_package

    dev = torch_device(device)
    if fp16 and dev.type != "cuda":
        raise ConfigError("AOTInductor fp16 packages need a CUDA device")
    t0 = time.perf_counter()
    model = AutocastIO(copy.deepcopy(module).to(dev).eval(), torch.float16 if fp16 else None)
    args = tuple(a.to(dev) for a in example_inputs(spec))
    # only the symbolic sizes the io-spec uses (lite has no points); export needs max > min
    used = {d for t in spec.inputs for d in t.dims if isinstance(d, str)}
    limit = {BATCH: limits.batch[2], POINTS: limits.points[2]}
    dims = {name: torch.export.Dim(name, min=1, max=max(limit[name], 2)) for name in used}
    shapes = tuple({i: dims[d] for i, d in enumerate(t.dims) if isinstance(d, str)} for t in spec.inputs)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # attribute-assigned-during-export notes from sam2's caches
        program = torch.export.export(model, args, dynamic_shapes=(shapes,))  # (shapes,): forward(*args)
        aoti_compile_and_package(program, package_path=str(path))
    return {"device": dev.type, "torch": torch.__version__, "build_s": round(time.perf_counter() - t0, 1)}
