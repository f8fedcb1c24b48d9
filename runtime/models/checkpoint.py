"""The samsem checkpoint file, shared by every model family, and torch device parsing.

A samsem checkpoint is a ``torch.save`` dict::

    {"format": "samsem-checkpoint", "version": 1, "family": "sam2" | "lite", "spec": spec dict,
     "model": state_dict (CPU tensors), **extra}

Plain ``{"model": state_dict}`` files (official SAM2 weights) are read too; they carry no family and
no spec. :func:`read_checkpoint` reads and validates either kind once, :func:`load_state_strict` loads weights
naming every missing, unexpected or misshaped key, and :func:`write_checkpoint` writes atomically. The
family-generic loading on top is :func:`samsem.runtime.models.registry.load_model`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from samsem.errors import ConfigError, InputError
from samsem.io import atomic_path

CHECKPOINT_FORMAT = "samsem-checkpoint"
CHECKPOINT_VERSION = 1
MAX_LISTED_KEYS = 8  # key names quoted in a loading error before "... and N more"
RESERVED_KEYS = ("format", "version", "family", "spec", "model")


class SpecDict:
    """``to_dict``/``from_dict`` for the frozen model-spec dataclasses stored in checkpoints and bundles."""

    label: ClassVar[str] = "model"

    def to_dict(self) -> dict[str, Any]:
        """JSON/pickle-friendly dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """Inverse of :meth:`to_dict`; unknown keys raise ConfigError."""
        if not isinstance(data, dict):
            raise ConfigError(f"a {cls.label} spec must be a dict, got {type(data).__name__}")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})  # type: ignore[arg-type]
        if unknown:
            raise ConfigError(f"unknown {cls.label} spec field(s): {', '.join(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint file read into memory.

    state: the "model" state dict; family and spec: the samsem header (both None for a plain
    ``{"model": state_dict}`` file; spec is the raw dict, parsed by the family's loader).
    """

    path: Path
    state: dict[str, torch.Tensor]
    family: str | None
    spec: Any


def torch_device(device: str | torch.device) -> torch.device:
    """Parse a device string; ConfigError if invalid or CUDA is requested but absent."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"invalid torch device {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    return dev


def unreadable_reason(path: Path, exc: Exception) -> str:
    """Why torch.load failed on ``path``, in words (torch's own messages are often a bare pickle opcode)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as err:
        return f"cannot read the file ({err.strerror or err})"
    if not head:
        return "empty file (0 bytes)"
    if head.startswith(b"PK\x03\x04"):  # the zip archive torch.save writes
        if "weights_only" in str(exc) or "Weights only" in str(exc):
            return "a PyTorch file holding objects other than weights (it may run code, so it is not loaded)"
        return "a damaged or truncated PyTorch checkpoint (its zip archive cannot be read)"
    if head[:1] == b"\x80":  # a pickle protocol header: torch.save's legacy format or a plain pickle
        return "a pickle file that is not a plain PyTorch weights file"
    return f"not a PyTorch checkpoint (the file starts with {head!r}, not a PyTorch zip archive)"


def read_checkpoint(path: str | Path, expected: str = "a samsem checkpoint") -> Checkpoint:
    """Load and validate a checkpoint file; InputError (with ``expected`` as the hint) for foreign files."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types (pickle, zip, EOF, ...) for foreign files
        raise InputError(path, unreadable_reason(path, exc), expected) from None
    if not isinstance(obj, dict):
        raise InputError(path, f"checkpoint holds a {type(obj).__name__}, not a dict", expected)
    family = spec = None
    if obj.get("format") == CHECKPOINT_FORMAT:
        if obj.get("version") != CHECKPOINT_VERSION:
            raise InputError(
                path,
                f"unsupported samsem checkpoint version {obj.get('version')!r}",
                f"version {CHECKPOINT_VERSION}",
            )
        family = obj.get("family")
        if not isinstance(family, str):
            raise InputError(path, f"samsem checkpoint has no valid family ({family!r})", expected)
        spec = obj.get("spec")
    state = obj.get("model")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        keys = ", ".join(sorted(map(str, obj))[:MAX_LISTED_KEYS])
        raise InputError(path, f"no 'model' state dict in checkpoint (top-level keys: {keys})", expected)
    return Checkpoint(path, state, family, spec)


def _listed(names: list[str]) -> str:
    head = ", ".join(names[:MAX_LISTED_KEYS])
    more = len(names) - MAX_LISTED_KEYS
    return f"{head}, ... and {more} more" if more > 0 else head


def load_state_strict(
    model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, what: str, expected: str
) -> None:
    """Strict load: every key present, none extra, all shapes equal; InputError naming the keys otherwise.

    what: the model described in the message ("SAM2 config 'sam2.1_hiera_t'"); expected: the hint.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_listed(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_listed(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es) (file != model): {_listed(shapes)}")
    if problems:
        raise InputError(path, f"weights do not fit {what}: " + "; ".join(problems), expected)
    model.load_state_dict(state, strict=True)


def write_checkpoint(
    path: str | Path,
    family: str,
    spec: Mapping[str, Any],
    model: nn.Module,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write ``model``'s state dict (on CPU) as a samsem checkpoint of ``family``, atomically.

    extra (training state) must only hold tensors and plain Python values and may not reuse the
    reserved keys (ConfigError).
    """
    clash = sorted(set(extra or {}) & set(RESERVED_KEYS))
    if clash:
        raise ConfigError(f"checkpoint extra keys {clash} are reserved")
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "family": family,
        "spec": dict(spec),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
