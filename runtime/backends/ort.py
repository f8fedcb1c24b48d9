"""ONNX Runtime backend: a chain of ONNX graphs (SAM2: encoder then decoder; lite: one model graph).

Execution providers: CPU always; with a CUDA device, TensorRT and CUDA before it when the installed
onnxruntime has them. Each session's inputs and outputs are checked against the io-spec when it is
opened, so a graph built for other shapes is refused with an InputError naming the file.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from samsem.errors import ConfigError, EngineError, InputError
from samsem.runtime.backends.base import BackendEntry, EngineFiles, chain
from samsem.runtime.models.iospec import EngineSpec

_ORT_TYPES = {"float32": "tensor(float)", "float16": "tensor(float16)", "int64": "tensor(int64)"}


def allowed_threads() -> int | None:
    """The number of CPUs this process may run on when it is restricted to fewer than the machine has
    (taskset, a cpuset, a pinned Ray worker), else None.

    ONNX Runtime's default intra-op pool is sized by the machine's physical cores and pins its threads
    to cores itself, outside the process's affinity (a process restricted to core 0 still got a pool
    thread pinned to core 1); an explicit thread count keeps it inside.
    """
    if not hasattr(os, "sched_getaffinity"):
        return None
    allowed = len(os.sched_getaffinity(0))
    return allowed if allowed < (os.cpu_count() or allowed) else None


def providers_for(device: str, available: Sequence[str]) -> list[str]:
    """Execution providers in preference order for ``device`` ("cpu", "cuda", "cuda:N")."""
    if device.startswith("cuda"):
        gpu = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
        if not gpu:
            raise ConfigError(
                f"device {device!r}: this onnxruntime has no CUDA provider (has {', '.join(available)}); "
                "install onnxruntime-gpu or use --device cpu"
            )
        return [*gpu, "CPUExecutionProvider"]
    if device != "cpu":
        raise ConfigError(f"invalid device {device!r} for onnxruntime; expected cpu, cuda or cuda:N")
    return ["CPUExecutionProvider"]


def check_session_io(path: Path, spec: EngineSpec, inputs: Sequence, outputs: Sequence) -> None:
    """Compare a session's NodeArg lists (name, type, shape) with an io-spec; InputError naming ``path``."""
    for kind, args, want in (("input", inputs, spec.inputs), ("output", outputs, spec.outputs)):
        got = {a.name: a for a in args}
        if set(got) != {t.name for t in want}:
            raise InputError(
                path,
                f"{spec.name} graph {kind}s are {sorted(got)}",
                f"{sorted(t.name for t in want)} (io-spec)",
            )
        for t in want:
            arg = got[t.name]
            if not t.fits(arg.shape) or arg.type != _ORT_TYPES.get(t.dtype):
                raise InputError(
                    path,
                    f"{spec.name} graph was built for other shapes: {kind} {t.name} is {arg.type} "
                    f"{arg.shape}",
                    f"{t.dtype} {list(t.dims)}",
                )


class OnnxBackend:
    """Backend over ONNX graphs run in order; named arrays in and out as in the ``model`` io-spec.

    model: the whole model's io-spec; graphs: (io-spec, .onnx file) per graph in run order (each
    graph's inputs come from the model inputs or earlier graphs' outputs).
    """

    name = "onnxruntime"

    def __init__(
        self,
        model: EngineSpec,
        graphs: Sequence[tuple[EngineSpec, Path]],
        device: str = "cpu",
    ) -> None:
        import onnxruntime as ort

        self.spec = model
        self.providers = providers_for(device, ort.get_available_providers())
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only
        threads = allowed_threads()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.sessions: list[tuple[EngineSpec, Any]] = []
        for spec, path in graphs:
            try:
                session = ort.InferenceSession(str(path), options, providers=self.providers)
            except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
                raise InputError(path, f"onnxruntime cannot load the graph ({str(exc)[:300]})") from exc
            check_session_io(path, spec, session.get_inputs(), session.get_outputs())
            self.sessions.append((spec, session))

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inputs/outputs keyed by the io-spec names (all float32), e.g. SAM2: image (B, 3, S, S),
        point_coords (B, P, 2), point_labels (B, P) -> masks (B, 3, S/4, S/4), iou_scores (B, 3)."""
        sizes = self.spec.check_inputs(inputs)
        pool: dict[str, np.ndarray] = {k: np.ascontiguousarray(v) for k, v in inputs.items()}
        try:
            chain(
                [(spec, partial(session.run, list(spec.output_names))) for spec, session in self.sessions],
                pool,
            )
        except Exception as exc:  # onnxruntime raises its own exception types (e.g. out of memory)
            raise EngineError(f"onnxruntime failed: {str(exc)[:300]}") from exc
        out = {n: pool[n] for n in self.spec.output_names}
        self.spec.check_outputs(out, sizes)
        return out


def _unavailable(device: str, files: EngineFiles) -> str | None:
    return None if importlib.util.find_spec("onnxruntime") else "onnxruntime is not installed"


def _create(files: EngineFiles, device: str, precision: str) -> OnnxBackend:
    return OnnxBackend(files.io["model"], files.graph_chain(), device)


BACKEND = BackendEntry(
    name="onnxruntime",
    format="onnx",
    fixed_precision=True,
    auto_on_cpu=True,
    unavailable=_unavailable,
    create=_create,
)
