"""TensorRT backend (TensorRT >= 10 Python API): serialized engines run with explicit tensor names.

One :class:`TrtEngine` per graph (SAM2: encoder, decoder; lite: model) deserialized with
``Runtime.deserialize_cuda_engine``; inputs get ``IExecutionContext.set_input_shape`` and every tensor a
device address (``set_tensor_address``) before ``execute_async_v3`` on one CUDA stream. Device buffers
(torch tensors) are allocated once at the profile's maximum shapes, host copies go through pinned
buffers, and the encoder's features stay on the device for the decoder. Batches larger than the
profile's maximum are run in chunks. The engine's tensors are checked against the io-spec at load
(:func:`check_engine_io`), so an engine built for other shapes is refused with an InputError.

tensorrt is imported only inside this module's functions; the pure helpers need neither tensorrt nor
CUDA and are unit-tested without them.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from samsem.errors import ConfigError, EngineError, InputError
from samsem.runtime.backends.base import BackendEntry, EngineFiles, chain
from samsem.runtime.models.iospec import BATCH, EngineSpec


@dataclass(frozen=True)
class TensorInfo:
    """What an engine says about one io tensor: is_input, dtype (numpy name), shape (-1 = dynamic) and,
    for inputs, the (min, opt, max) shapes of optimisation profile 0."""

    is_input: bool
    dtype: str
    shape: tuple[int, ...]
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None


def check_engine_io(path: Path, spec: EngineSpec, tensors: Mapping[str, TensorInfo]) -> int:
    """Compare an engine's io tensors with an io-spec; returns the profile's maximum batch.

    InputError naming ``path`` for other names, dtypes, fixed sizes, or a profile that does not cover
    batch 1.
    """
    want = {t.name: (True, t) for t in spec.inputs} | {t.name: (False, t) for t in spec.outputs}
    if set(tensors) != set(want):
        raise InputError(
            path, f"engine tensors are {sorted(tensors)}", f"{sorted(want)} (io-spec {spec.name})"
        )
    max_batch = None
    for name, (is_input, t) in want.items():
        info = tensors[name]
        if info.is_input != is_input or info.dtype != t.dtype or not t.fits(info.shape):
            raise InputError(
                path,
                f"engine was built for other shapes: {name} is {info.dtype} {list(info.shape)}"
                f"{' input' if info.is_input else ' output'}",
                f"{t.dtype} {list(t.dims)} {'input' if is_input else 'output'}",
            )
        if is_input:
            if info.profile is None or not all(t.fits(s) for s in info.profile):
                raise InputError(
                    path, f"engine profile of {name} is {info.profile}", f"shapes {list(t.dims)}"
                )
            axis = t.dims.index(BATCH) if BATCH in t.dims else None
            if axis is not None:
                lo, hi = info.profile[0][axis], info.profile[2][axis]
                if lo != 1:
                    raise InputError(path, f"engine profile of {name} starts at batch {lo}", "batch 1")
                max_batch = hi if max_batch is None else min(max_batch, hi)
    return max_batch or 1


def batch_chunks(batch: int, max_batch: int) -> list[slice]:
    """Slices that split ``batch`` items into runs of at most ``max_batch``."""
    return [slice(i, min(i + max_batch, batch)) for i in range(0, batch, max_batch)]


def points_limit(spec: EngineSpec, tensors: Mapping[str, TensorInfo]) -> int | None:
    """Largest point count the engine's profile accepts (None when the engine takes no points)."""
    limits = [
        info.profile[2][t.dims.index("points")]
        for t in spec.inputs
        if "points" in t.dims and (info := tensors[t.name]).profile is not None
    ]
    return min(limits) if limits else None


# ----------------------------------------------------------------------------------------- TensorRT side


def _torch_dtype(dtype: str) -> Any:
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "int32": torch.int32, "int64": torch.int64}[
        dtype
    ]


class TrtEngine:
    """One deserialized engine with its execution context and device buffers at the profile maximum."""

    def __init__(self, path: Path, spec: EngineSpec, device: Any, stream: Any, logger: Any) -> None:
        import tensorrt as trt
        import torch

        self.path, self.spec = path, spec
        runtime = trt.Runtime(logger)
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise InputError(path, "TensorRT cannot deserialize the engine (other TensorRT version or GPU?)")
        tensors = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))).name
            shape = tuple(self.engine.get_tensor_shape(name))
            profile = None
            if is_input:
                smallest, optimal, largest = (tuple(s) for s in self.engine.get_tensor_profile_shape(name, 0))
                profile = (smallest, optimal, largest)
            tensors[name] = TensorInfo(is_input, dtype, shape, profile)
        self.max_batch = check_engine_io(path, spec, tensors)
        self.max_points = points_limit(spec, tensors)
        self.context = self.engine.create_execution_context()
        self.stream = stream
        self.device = device
        # output buffers at the largest shapes the profile allows
        hi = {t.name: tensors[t.name].profile[2] for t in spec.inputs}  # type: ignore[index]
        for t in spec.inputs:
            self.context.set_input_shape(t.name, hi[t.name])
        self.outputs = {
            t.name: torch.empty(
                tuple(self.context.get_tensor_shape(t.name)), dtype=_torch_dtype(t.dtype), device=device
            )
            for t in spec.outputs
        }

    def __call__(self, inputs: Mapping[str, Any]) -> list[Any]:
        """Device tensors in (io-spec input names) -> views of the device output buffers in io-spec order
        (same stream)."""
        for t in self.spec.inputs:
            x = inputs[t.name]
            if not self.context.set_input_shape(t.name, tuple(x.shape)):
                raise EngineError(
                    f"{self.path}: input {t.name} shape {tuple(x.shape)} is outside the engine profile"
                )
            self.context.set_tensor_address(t.name, x.data_ptr())
        out = []
        for t in self.spec.outputs:
            shape = tuple(self.context.get_tensor_shape(t.name))
            buf = self.outputs[t.name].view(-1)[: int(np.prod(shape))].view(shape)
            self.context.set_tensor_address(t.name, buf.data_ptr())
            out.append(buf)
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise EngineError(f"{self.path}: TensorRT execution failed (execute_async_v3 returned False)")
        return out


class TensorRTBackend:
    """Backend over a chain of TensorRT engines; named float32 numpy arrays in and out (``model`` io-spec).

    graphs: (io-spec, engine file) per graph in run order; device: "cuda" or "cuda:N".
    """

    name = "tensorrt"

    def __init__(self, model: EngineSpec, graphs: Sequence[tuple[EngineSpec, Path]], device: str) -> None:
        import tensorrt as trt
        import torch

        from samsem.runtime.models.checkpoint import torch_device

        self.spec = model
        self.device = torch_device(device)
        if self.device.type != "cuda":
            raise ConfigError(f"the tensorrt backend needs a CUDA device, got {device!r}")
        self.logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(self.device):
            self.stream = torch.cuda.Stream(self.device)
            self.engines = [TrtEngine(p, s, self.device, self.stream, self.logger) for s, p in graphs]
        self.max_batch = min(e.max_batch for e in self.engines)
        points = [e.max_points for e in self.engines if e.max_points is not None]
        self.max_points = min(points) if points else None
        self._pinned: dict[str, Any] = {}

    def _pinned_like(self, name: str, shape: tuple[int, ...], dtype: Any) -> Any:
        """A pinned host buffer of at least ``shape`` for tensor ``name``, reused across calls."""
        import torch

        n = int(np.prod(shape))
        buf = self._pinned.get(name)
        if buf is None or buf.numel() < n or buf.dtype != dtype:
            buf = torch.empty(n, dtype=dtype, pin_memory=True)
            self._pinned[name] = buf
        return buf[:n].view(shape)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Like the torch backend: io-spec names, float32 arrays; batches above the profile are chunked."""
        import torch

        sizes = self.spec.check_inputs(inputs)
        if self.max_points is not None and sizes.get("points", 0) > self.max_points:
            raise InputError(
                None,
                f"{sizes['points']} point prompts but the TensorRT engines take at most {self.max_points}",
                "a bundle exported with a larger --max-points",
            )
        parts: list[dict[str, np.ndarray]] = []
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            for sl in batch_chunks(sizes[BATCH], self.max_batch):
                pool = {}
                for name, arr in inputs.items():
                    part = np.ascontiguousarray(arr[sl])
                    host = self._pinned_like(name, part.shape, torch.float32)
                    host.copy_(torch.from_numpy(part))
                    pool[name] = host.to(self.device, non_blocking=True)
                chain([(engine.spec, engine) for engine in self.engines], pool)
                outs = {}
                for t in self.spec.outputs:
                    dev = pool[t.name]
                    host = self._pinned_like("out:" + t.name, tuple(dev.shape), dev.dtype)
                    host.copy_(dev, non_blocking=True)
                    outs[t.name] = host
                self.stream.synchronize()
                parts.append({k: v.float().numpy().copy() for k, v in outs.items()})
        out = {n: np.concatenate([p[n] for p in parts]) for n in self.spec.output_names}
        self.spec.check_outputs(out, sizes)
        return out


def _unavailable(device: str, files: EngineFiles) -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "tensorrt is not installed"
    import torch

    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        return "needs a CUDA device"
    return None


def _create(files: EngineFiles, device: str, precision: str) -> TensorRTBackend:
    return TensorRTBackend(files.io["model"], files.graph_chain(), device)


BACKEND = BackendEntry(
    name="tensorrt",
    format="tensorrt",
    fixed_precision=True,
    auto_on_cpu=False,
    unavailable=_unavailable,
    create=_create,
)
