"""Tensor names, dtypes and shapes of every engine: the one place exporters and loaders read them.

A :class:`TensorSpec` has fixed sizes and two symbolic ones, ``"batch"`` and ``"points"``. An
:class:`EngineSpec` lists an engine's inputs and outputs, gives TensorRT-style (min, opt, max) input
shapes (:meth:`EngineSpec.profile`), checks a batch of named arrays (:meth:`EngineSpec.check_inputs`) and
round-trips through JSON for bundle manifests.

Each family module builds its own io-specs from its spec, found through the registry (``ModelFamily.io``;
e.g. :meth:`samsem.runtime.models.sam2.SAM2Geometry.engines`,
:meth:`samsem.runtime.models.lite.LiteSpec.engines`): a "model" graph (the whole model) and, for split
models, the graphs they export separately.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from samsem.errors import EngineError

BATCH = "batch"
POINTS = "points"
SYMBOLS = (BATCH, POINTS)

Shape = tuple[int, ...]


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor: dtype (numpy name) and dims (ints, or "batch"/"points")."""

    name: str
    dtype: str
    dims: tuple[int | str, ...]

    def __post_init__(self) -> None:
        for d in self.dims:
            if isinstance(d, str) and d not in SYMBOLS:
                raise ValueError(f"{self.name}: unknown symbolic dim {d!r} (expected one of {SYMBOLS})")
        np.dtype(self.dtype)  # raises TypeError for an unknown dtype

    def fits(self, shape: Sequence[int | str | None], named_dynamic: bool = False) -> bool:
        """True when an engine's declared ``shape`` implements this tensor: the same rank, every fixed
        size equal, any value (-1, None, a name) for "batch"/"points"; with ``named_dynamic`` those must
        be non-empty names (an ONNX dim_param), i.e. really dynamic."""
        if len(shape) != len(self.dims):
            return False
        return all(
            (not named_dynamic or (isinstance(got, str) and bool(got)))
            if isinstance(want, str)
            else got == want
            for got, want in zip(shape, self.dims, strict=True)
        )

    def shape(self, sizes: Mapping[str, int]) -> Shape:
        """Concrete shape for the symbolic sizes, e.g. {"batch": 4, "points": 2}."""
        return tuple(sizes[d] if isinstance(d, str) else d for d in self.dims)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "dims": list(self.dims)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        return cls(str(data["name"]), str(data["dtype"]), tuple(data["dims"]))


@dataclass(frozen=True)
class EngineSpec:
    """The io of one engine (a whole model or one half of a split model)."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    def profile(
        self,
        batch_min: int,
        batch_opt: int,
        batch_max: int,
        points_max: int,
        points_min: int = 1,
        points_opt: int | None = None,
    ) -> dict[str, tuple[Shape, Shape, Shape]]:
        """Input name -> (min, opt, max) shape (TensorRT optimisation profile); points_opt defaults to max."""
        if not 1 <= batch_min <= batch_opt <= batch_max:
            raise ValueError(
                f"need 1 <= batch_min <= batch_opt <= batch_max, got {batch_min, batch_opt, batch_max}"
            )
        p_opt = points_max if points_opt is None else points_opt
        if not 1 <= points_min <= p_opt <= points_max:
            raise ValueError(
                f"need 1 <= points_min <= points_opt <= points_max, got {points_min, p_opt, points_max}"
            )
        lo = {BATCH: batch_min, POINTS: points_min}
        mid = {BATCH: batch_opt, POINTS: p_opt}
        hi = {BATCH: batch_max, POINTS: points_max}
        return {t.name: (t.shape(lo), t.shape(mid), t.shape(hi)) for t in self.inputs}

    def check_inputs(self, inputs: Mapping[str, np.ndarray]) -> dict[str, int]:
        """Validate named arrays against the inputs; returns the symbolic sizes, EngineError otherwise."""
        names = set(inputs)
        if names != set(self.input_names):
            missing = sorted(set(self.input_names) - names)
            extra = sorted(names - set(self.input_names))
            raise _fault(
                f"{self.name} engine inputs: missing {missing}, unexpected {extra}",
                f"exactly {list(self.input_names)}",
            )
        return _check(self, self.inputs, inputs, "input")

    def check_outputs(self, outputs: Mapping[str, np.ndarray], sizes: Mapping[str, int]) -> None:
        """Validate an engine's outputs against the outputs spec and the input's symbolic sizes."""
        missing = sorted(set(self.output_names) - set(outputs))
        if missing:
            raise _fault(f"{self.name} engine returned no {missing}")
        found = _check(self, self.outputs, {n: outputs[n] for n in self.output_names}, "output")
        for sym, value in found.items():
            if sizes.get(sym, value) != value:
                raise _fault(f"{self.name} engine output {sym} size {value} != input's {sizes[sym]}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EngineSpec:
        return cls(
            str(data["name"]),
            tuple(TensorSpec.from_dict(t) for t in data["inputs"]),
            tuple(TensorSpec.from_dict(t) for t in data["outputs"]),
        )


def _check(
    engine: EngineSpec, specs: tuple[TensorSpec, ...], arrays: Mapping[str, np.ndarray], kind: str
) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for spec in specs:
        arr = arrays[spec.name]
        where = f"{engine.name} {kind} {spec.name!r}"
        if not isinstance(arr, np.ndarray):
            raise _fault(f"{where} is a {type(arr).__name__}", "a numpy array")
        if arr.dtype != np.dtype(spec.dtype):
            raise _fault(f"{where} has dtype {arr.dtype}", spec.dtype)
        if arr.ndim != len(spec.dims):
            raise _fault(f"{where} has shape {arr.shape}", f"dims {_fmt(spec.dims)}")
        for axis, (want, got) in enumerate(zip(spec.dims, arr.shape, strict=True)):
            if isinstance(want, str):
                if sizes.setdefault(want, got) != got:
                    raise _fault(
                        f"{where} axis {axis} ({want}) is {got} but another tensor has {sizes[want]}",
                        f"the same {want} size for all tensors",
                    )
                if got < 1:
                    raise _fault(f"{where} has an empty {want} axis", f"{want} >= 1")
            elif want != got:
                raise _fault(f"{where} has shape {arr.shape}", f"dims {_fmt(spec.dims)}")
    return sizes


def _fault(reason: str, expected: str | None = None) -> EngineError:
    """An engine fed or answering outside its io-spec: a fault of the runtime, not of the user's input."""
    return EngineError(f"{reason} (expected {expected})" if expected else reason)


def _fmt(dims: tuple[int | str, ...]) -> str:
    return "(" + ", ".join(map(str, dims)) + ")"


def engines_to_json(engines: Mapping[str, EngineSpec]) -> str:
    """Serialise {key: EngineSpec} (e.g. for a bundle manifest)."""
    return json.dumps({k: e.to_dict() for k, e in engines.items()}, indent=2)


def engines_from_json(text: str) -> dict[str, EngineSpec]:
    """Inverse of :func:`engines_to_json`."""
    return {k: EngineSpec.from_dict(v) for k, v in json.loads(text).items()}
