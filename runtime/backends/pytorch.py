"""PyTorch backends: a model module (SAM2ImageModel, LiteNet) run eagerly, compiled, or replayed as CUDA
graphs, on named numpy arrays or on device tensors.

The module declares its io with ``engines()["model"]`` (:mod:`~samsem.runtime.models.iospec`):
``forward`` takes the spec's inputs in order and returns its outputs in order (one tensor, or a tuple).

Precision: "fp32" everywhere; "bf16" and "fp16" run under ``torch.autocast`` on CUDA, which keeps the
numerically sensitive operations (softmax, normalisations, reductions) in float32; the model keeps its own
sensitive parts in float32 too (SAM2: the random-Fourier positional encodings of the prompts). On CPU
"bf16" autocast is allowed (it works with SAM2 and lets the reduced-precision path be tested without a
GPU, though it is not faster on most CPUs); "fp16" on CPU is a ConfigError. Outputs are always float32.

Execution modes (:data:`MODES`), each registered as its own backend (:mod:`.base`):

* ``torch`` — eager;
* ``torch-compile`` — ``torch.compile`` (Inductor, fixed shapes);
* ``torch-cudagraphs`` — eager, captured into one CUDA graph per batch shape and replayed (CUDA only);
* ``torch-compile-cudagraphs`` — ``torch.compile(mode="reduce-overhead")``: Inductor's kernels replayed
  through its CUDA graphs (CUDA only).

The compiled and graph modes run fixed shapes: a batch is padded (with copies of its last item) to the
next power of two, so a run compiles or captures at most log2(largest batch) + 1 shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from samsem.errors import ConfigError
from samsem.runtime.backends.base import BackendEntry, EngineFiles, spec_proxies
from samsem.runtime.models.checkpoint import torch_device
from samsem.runtime.models.iospec import BATCH, EngineSpec

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Autocast(nn.Module):
    """``module`` under ``torch.autocast(dtype)`` (None: plain float32); outputs come back float32. The
    autocast weight cache is off: a cast cached inside a captured CUDA graph would be freed after it."""

    def __init__(self, module: nn.Module, dtype: torch.dtype | None) -> None:
        super().__init__()
        self.module = module
        self.dtype = dtype

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        enabled = self.dtype is not None
        with torch.autocast(args[0].device.type, dtype=self.dtype, enabled=enabled, cache_enabled=False):
            outs = self.module(*args)
        outs = (outs,) if isinstance(outs, torch.Tensor) else outs
        return tuple(o.float() for o in outs)


class GraphRunner:
    """Replays ``fn`` as CUDA graphs: one graph per tuple of input shapes, captured on first use (after
    warm-up runs on a side stream). Inputs are copied into the graph's static buffers; outputs are
    cloned out of its static outputs."""

    def __init__(self, fn: Callable[..., tuple[torch.Tensor, ...]]) -> None:
        self.fn = fn
        self.graphs: dict[tuple, tuple[Any, list[torch.Tensor], tuple[torch.Tensor, ...]]] = {}
        self.pool: Any = None

    def __call__(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        key = tuple((tuple(a.shape), a.dtype) for a in args)
        if key not in self.graphs:
            static = [a.clone() for a in args]
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    self.fn(*static)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                outs = self.fn(*static)
            self.pool = graph.pool()
            self.graphs[key] = (graph, static, outs)
        graph, static, outs = self.graphs[key]
        for buf, a in zip(static, args, strict=True):
            buf.copy_(a)
        graph.replay()
        return tuple(o.clone() for o in outs)


@dataclass(frozen=True)
class ExecMode:
    """How a backend runs its module: build(module wrapped in :class:`Autocast`) -> callable; cuda_only;
    fixed_shapes: pad batches to powers of two (compiled/captured shapes are reused)."""

    build: Callable[[nn.Module], Callable[..., tuple[torch.Tensor, ...]]]
    cuda_only: bool
    fixed_shapes: bool


def _compiled(mode: str | None) -> Callable[[nn.Module], Callable[..., tuple[torch.Tensor, ...]]]:
    def build(module: nn.Module) -> Callable[..., tuple[torch.Tensor, ...]]:
        compiled = cast(Any, torch.compile(module, dynamic=False, mode=mode))
        if mode != "reduce-overhead":
            return compiled

        def replay(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
            # Inductor's CUDA graphs reuse their output memory on the next replay: a new step each call,
            # and outputs copied out (the pipeline keeps model 1's output across later batches)
            torch.compiler.cudagraph_mark_step_begin()
            return tuple(o.clone() for o in compiled(*args))

        return replay

    return build


MODES: dict[str, ExecMode] = {
    "eager": ExecMode(lambda m: m, cuda_only=False, fixed_shapes=False),
    "compile": ExecMode(_compiled(None), cuda_only=False, fixed_shapes=True),
    "cudagraphs": ExecMode(lambda m: GraphRunner(m), cuda_only=True, fixed_shapes=True),
    "compile-cudagraphs": ExecMode(_compiled("reduce-overhead"), cuda_only=True, fixed_shapes=True),
}


def bucket(batch: int) -> int:
    """The fixed batch size a batch of ``batch`` items is padded to: the next power of two."""
    return 1 << max(batch - 1, 0).bit_length()


class TorchBackend:
    """Backend over a torch model with an ``engines()`` method: named inputs -> named outputs of its
    "model" engine, on numpy arrays (:meth:`run`) or on tensors of its device (:meth:`run_tensors`).

    SAM2ImageModel: {"image", "point_coords", "point_labels"} -> {"masks", "iou_scores"}; LiteNet:
    {"image"} -> {"logits"}. The model is moved to ``device`` and put in eval mode. mode: a key of
    :data:`MODES`.
    """

    name = "torch"

    def __init__(
        self, model: nn.Module, device: str = "cpu", precision: str = "fp32", mode: str = "eager"
    ) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
        if mode not in MODES:
            raise ConfigError(f"unknown execution mode {mode!r}; expected one of {', '.join(MODES)}")
        self.device = torch_device(device)
        if self.device.type == "cpu" and precision == "fp16":
            raise ConfigError("precision fp16 needs a CUDA device; use fp32 or bf16 on CPU")
        if MODES[mode].cuda_only and self.device.type != "cuda":
            raise ConfigError(f"execution mode {mode} needs a CUDA device")
        self.precision = precision
        self.mode = mode
        self.model = model.to(self.device).eval()
        self.spec: EngineSpec = cast(Any, model).engines()["model"]
        self.runner = MODES[mode].build(Autocast(self.model, PRECISIONS[precision]))
        if mode != "eager":
            self.name = f"torch-{mode}"

    def run_tensors(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Inputs keyed by the spec's input names (float32 tensors on this device, validated) -> float32
        outputs keyed by its output names, on the device."""
        sizes = self.spec.check_inputs(spec_proxies(inputs))
        args = [inputs[n] for n in self.spec.input_names]
        batch = sizes.get(BATCH)
        padded = bucket(batch) if batch is not None and MODES[self.mode].fixed_shapes else batch
        if padded != batch:
            assert batch is not None and padded is not None
            args = [_pad_batch(a, padded) for a in args]
        with torch.inference_mode():
            outs = self.runner(*args)
        if padded != batch:
            outs = tuple(o[:batch] for o in outs)
        out = dict(zip(self.spec.output_names, outs, strict=True))
        self.spec.check_outputs(spec_proxies(out), sizes)
        return out

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inputs keyed by the spec's input names (float32, validated) -> float32 outputs keyed by its
        output names (e.g. SAM2: masks (B, 3, S/4, S/4) logits, iou_scores (B, 3); lite: logits
        (B, 1, S, S))."""
        self.spec.check_inputs(inputs)
        tensors = {n: torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for n, a in inputs.items()}
        return {n: t.cpu().numpy() for n, t in self.run_tensors(tensors).items()}


def _pad_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, ...) -> (size, ...) with the last item repeated."""
    return torch.cat([x, x[-1:].expand(size - x.shape[0], *x.shape[1:])])


def _unavailable_for(mode: str) -> Callable[[str, EngineFiles], str | None]:
    def unavailable(device: str, files: EngineFiles) -> str | None:
        if MODES[mode].cuda_only and torch.device(device).type != "cuda":
            return "needs a CUDA device"
        return None  # torch is always installed; the device is checked when the backend is built

    return unavailable


def _create_for(mode: str) -> Callable[[EngineFiles, str, str], TorchBackend]:
    def create(files: EngineFiles, device: str, precision: str) -> TorchBackend:
        from samsem.runtime.models.registry import load_model

        loaded = load_model(files.files["model"], device=device, family=files.family.name)
        return TorchBackend(loaded.module, device=device, precision=precision, mode=mode)

    return create


def _entry(name: str, mode: str) -> BackendEntry:
    return BackendEntry(
        name=name,
        format="torch",
        fixed_precision=False,
        auto_on_cpu=mode == "eager",
        unavailable=_unavailable_for(mode),
        create=_create_for(mode),
        wrap=lambda module, device, precision: TorchBackend(module, device, precision, mode),
    )


BACKEND = _entry("torch", "eager")
COMPILE = _entry("torch-compile", "compile")
CUDAGRAPHS = _entry("torch-cudagraphs", "cudagraphs")
COMPILE_CUDAGRAPHS = _entry("torch-compile-cudagraphs", "compile-cudagraphs")
