"""The backend registry and the graph chain every multi-graph engine runs.

Backends implement :class:`~samsem.runtime.models.segmenter.Backend` (named numpy arrays in and out), and
those that also run torch tensors kept on their device (PyTorch, AOTInductor)
:class:`~samsem.runtime.models.segmenter.TensorBackend`; the protocols live beside the segmenters that
call them, since model code may not import backends.

A backend module (:mod:`.pytorch`, :mod:`.ort`, :mod:`.trt`, :mod:`.aoti`) declares ``BACKEND`` =
:class:`BackendEntry`: its name, the bundle file format it runs, whether its precision is fixed when the
engine is built, whether ``--backend auto`` may pick it on a CPU, an availability check (library
installed, device, files built for this device) and a factory. Registration order is the order in which
``auto`` tries them (fastest first). Each backend imports its library inside its own module only.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from samsem.errors import ConfigError

if TYPE_CHECKING:
    from samsem.runtime.models.iospec import EngineSpec
    from samsem.runtime.models.registry import ModelFamily
    from samsem.runtime.models.segmenter import Backend


@dataclass(frozen=True)
class EngineFiles:
    """What a factory gets: the model's family and io-specs, its engine files of the backend's format
    (graph name -> path) and their device/precision as recorded at export (None for torch weights)."""

    family: ModelFamily
    io: Mapping[str, EngineSpec]
    files: Mapping[str, Path]
    built_for: frozenset[str]

    def graph_chain(self) -> list[tuple[EngineSpec, Path]]:
        """(io-spec, file) of each exported graph in run order (what multi-graph engines load)."""
        return [(self.io[g], self.files[g]) for g in self.family.graphs]


@dataclass(frozen=True)
class BackendEntry:
    """One registered backend.

    name: what ``--backend`` takes; format: the bundle engine format it runs; fixed_precision: engines
    run at the precision they were built with (else the requested one applies); auto_on_cpu: ``auto``
    may pick it for a CPU device; unavailable(device, files) -> None when usable, else the reason;
    create(files, device, precision) -> Backend; wrap(module, device, precision) -> Backend over an
    already loaded torch module (backends that run torch weights; None for engine formats).
    """

    name: str
    format: str
    fixed_precision: bool
    auto_on_cpu: bool
    unavailable: Callable[[str, EngineFiles], str | None]
    create: Callable[[EngineFiles, str, str], Backend]
    wrap: Callable[[Any, str, str], Backend] | None = None


_MODULES: dict[str, str] = {}


def register_backend(name: str, module: str) -> None:
    """Register the backend ``name`` defined as ``BACKEND`` in ``module`` (``"module:ATTR"`` names another
    attribute) after the ones registered so far in ``auto``'s order; duplicate names are refused."""
    if name in _MODULES:
        raise ConfigError(f"backend {name!r} is already registered ({_MODULES[name]})")
    _MODULES[name] = module


register_backend("tensorrt", "samsem.runtime.backends.trt")
register_backend("aoti", "samsem.runtime.backends.aoti")
register_backend("onnxruntime", "samsem.runtime.backends.ort")
register_backend("torch", "samsem.runtime.backends.pytorch")
register_backend("torch-compile", "samsem.runtime.backends.pytorch:COMPILE")
register_backend("torch-cudagraphs", "samsem.runtime.backends.pytorch:CUDAGRAPHS")
register_backend("torch-compile-cudagraphs", "samsem.runtime.backends.pytorch:COMPILE_CUDAGRAPHS")


def backend_names() -> tuple[str, ...]:
    """Registered backend names in ``auto``'s order of preference (no backend module is imported)."""
    return tuple(_MODULES)


def get_backend(name: str) -> BackendEntry:
    """The backend registered as ``name``; ConfigError listing the valid names otherwise."""
    if name not in _MODULES:
        raise ConfigError(f"unknown backend {name!r}; expected auto or one of {', '.join(backend_names())}")
    module, _, attr = _MODULES[name].partition(":")
    return getattr(importlib.import_module(module), attr or "BACKEND")


_NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32}


def spec_proxies(tensors: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Zero-stride numpy stand-ins with the shapes and dtypes of named tensors (torch or numpy), so that
    an io-spec's checks (:meth:`EngineSpec.check_inputs`) apply to device tensors without copying."""
    out = {}
    for name, t in tensors.items():
        if isinstance(t, np.ndarray):
            out[name] = t
            continue
        dtype = _NUMPY_DTYPES.get(str(t.dtype).removeprefix("torch."), np.uint8)
        out[name] = np.broadcast_to(np.zeros((), dtype), tuple(t.shape))
    return out


def chain(
    graphs: Sequence[tuple[EngineSpec, Callable[[dict[str, Any]], Sequence[Any]]]], pool: dict[str, Any]
) -> dict[str, Any]:
    """Run graphs in order over a pool of named tensors (numpy arrays or device tensors).

    graphs: (io-spec, run) pairs; ``run`` takes the graph's inputs by name and returns its outputs in
    io-spec order. Each graph's inputs come from the pool (model inputs or earlier graphs' outputs) and
    its outputs are added to it. Returns the pool.
    """
    for spec, run in graphs:
        outs = run({n: pool[n] for n in spec.input_names})
        pool.update(zip(spec.output_names, outs, strict=True))
    return pool
