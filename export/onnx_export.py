"""ONNX export of one graph per io-spec engine, with dynamic batch (and point count), and its checks.

Two exporters of ``torch.onnx.export``:

* ``"torchscript"`` (default): the tracing exporter. It exports the tiny SAM2 in a few seconds and keeps
  module paths in node names (``/image_encoder/trunk/blocks.0/attn/Softmax``), which the TensorRT
  FP32-layer policy uses to keep whole attention/normalisation scopes in FP32.
* ``"dynamo"``: the ``torch.export``-based exporter (PyTorch's default since 2.9); about ten times
  slower here and its node names carry no module scope (the FP32 policy then falls back to layer types).

Both give checker-valid graphs of opset >= 17 whose outputs match PyTorch (tests/test_backend_onnx.py).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from samsem.errors import ConfigError, InputError
from samsem.runtime.models.iospec import BATCH, POINTS, EngineSpec

EXPORTERS = ("torchscript", "dynamo")
MIN_OPSET = 17
EXAMPLE_SIZES = {BATCH: 2, POINTS: 3}  # trace sizes; != 1 so neither is specialised away
_ONNX_DTYPES = {"float32": 1, "float16": 10, "int64": 7}  # onnx.TensorProto enum values


def example_inputs(spec: EngineSpec, sizes: Mapping[str, int] = EXAMPLE_SIZES, seed: int = 0) -> tuple:
    """Random float32 tensors shaped like ``spec``'s inputs (tracing needs shapes, not meaningful values)."""
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(t.shape(sizes), generator=gen, dtype=torch.float32) for t in spec.inputs)


def _dynamic_axes(spec: EngineSpec) -> dict[str, dict[int, str]]:
    return {
        t.name: {i: d for i, d in enumerate(t.dims) if isinstance(d, str)}
        for t in (*spec.inputs, *spec.outputs)
        if any(isinstance(d, str) for d in t.dims)
    }


def export_onnx(
    module: nn.Module,
    spec: EngineSpec,
    path: str | Path,
    *,
    opset: int = MIN_OPSET,
    exporter: str = "torchscript",
    max_sizes: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Export ``module`` (inputs and outputs in ``spec`` order) to ``path``; returns build details.

    Symbolic dims of ``spec`` ("batch", "points") become named dynamic ONNX dims. max_sizes bounds them
    for the dynamo exporter (default 1024). The file is then validated with :func:`check_onnx`.
    """
    if exporter not in EXPORTERS:
        raise ConfigError(f"unknown ONNX exporter {exporter!r}; expected one of {', '.join(EXPORTERS)}")
    if opset < MIN_OPSET:
        raise ConfigError(f"ONNX opset must be >= {MIN_OPSET}, got {opset}")
    path = Path(path)
    args = example_inputs(spec)
    input_names, output_names = list(spec.input_names), list(spec.output_names)
    module = module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings about code we do not own
        if exporter == "torchscript":
            torch.onnx.export(
                module,
                args,
                str(path),
                opset_version=opset,
                dynamic_axes=_dynamic_axes(spec),
                dynamo=False,
                input_names=input_names,
                output_names=output_names,
            )
        else:
            limits = dict(max_sizes or {})
            dims = {s: torch.export.Dim(s, min=1, max=limits.get(s, 1024)) for s in (BATCH, POINTS)}
            shapes = tuple(
                {i: dims[d] for i, d in enumerate(t.dims) if isinstance(d, str)} for t in spec.inputs
            )
            program = torch.onnx.export(
                module,
                args,
                dynamic_shapes=shapes,
                opset_version=opset,
                dynamo=True,
                verbose=False,
                input_names=input_names,
                output_names=output_names,
            )
            if program is None:
                raise InputError(path, "the dynamo exporter returned no program")
            program.save(str(path))
    stamp_io_shapes(path, spec)
    return {"opset": check_onnx(path, spec), "exporter": exporter, "torch": torch.__version__}


def stamp_io_shapes(path: str | Path, spec: EngineSpec) -> None:
    """Write the io-spec's dims into the graph's input/output declarations (fixed sizes as values,
    "batch"/"points" as named dims). The tracing exporter leaves some static output sizes symbolic;
    the full ONNX check that follows re-infers the shapes, so a wrong stamp fails there."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    declared = {v.name: v for v in (*model.graph.input, *model.graph.output)}
    for t in (*spec.inputs, *spec.outputs):
        if t.name not in declared:
            continue  # check_onnx names the missing tensor
        shape = declared[t.name].type.tensor_type.shape
        shape.ClearField("dim")
        for d in t.dims:
            dim = shape.dim.add()
            if isinstance(d, str):
                dim.dim_param = d
            else:
                dim.dim_value = d
    onnx.save(model, str(path))


def check_onnx(path: str | Path, spec: EngineSpec) -> int:
    """ONNX checker (full) + io names, dtypes and dims equal to ``spec``; returns the opset.

    InputError naming the file otherwise.
    """
    import onnx

    path = Path(path)
    try:
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path), load_external_data=False)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, OSError) as exc:
        raise InputError(path, f"ONNX checker failed: {str(exc)[:300]}") from exc
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < MIN_OPSET:
        raise InputError(path, f"ONNX opset {opset}", f"opset >= {MIN_OPSET}")
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    for kind, values, want in (
        ("input", [v for v in graph.input if v.name not in initializers], spec.inputs),
        ("output", list(graph.output), spec.outputs),
    ):
        got = {v.name: v.type.tensor_type for v in values}
        if list(got) != [t.name for t in want]:
            raise InputError(path, f"ONNX {kind}s are {list(got)}", f"{[t.name for t in want]} (io-spec)")
        for t in want:
            tt = got[t.name]
            dims = [d.dim_param if d.HasField("dim_param") else d.dim_value for d in tt.shape.dim]
            if tt.elem_type != _ONNX_DTYPES[t.dtype] or not t.fits(dims, named_dynamic=True):
                raise InputError(
                    path,
                    f"ONNX {kind} {t.name} has type {tt.elem_type} dims {dims}",
                    f"{t.dtype} {list(t.dims)}",
                )
    return int(opset)


def run_onnx(path: str | Path, spec: EngineSpec, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run one exported graph on ONNX Runtime's CPU provider (export-time parity checks): its outputs
    in io-spec order."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(list(spec.output_names), {n: inputs[n] for n in spec.input_names})
