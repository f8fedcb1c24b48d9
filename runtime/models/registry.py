"""The model-family registry: one :class:`ModelFamily` per family, the way timm registers models.

A family module (:mod:`~samsem.runtime.models.sam2`, :mod:`~samsem.runtime.models.lite`) declares
everything the stages need to know about its models in one ``FAMILY`` object: its spec type, how to
build random weights, how the raw network becomes the io-spec "model" module, its io-specs and exported
graphs, its preprocessing record, its runtime segmenter and its export modules. The runtime, the exporter
and the trainer look families up here by name and never branch on the name; training registers its own
task and defaults per family name (:mod:`samsem.train.task`, :mod:`samsem.train.config`), so the runtime
knows nothing of training.

Families are registered by module path and imported on first use, so listing names needs no torch.
The three family-generic operations on weights live here too: :func:`build_model` (random weights),
:func:`load_model` (a checkpoint file, read once; its header names the family) and :func:`save_model`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from samsem.errors import ConfigError, InputError

if TYPE_CHECKING:
    from torch import nn

    from samsem.runtime.models.checkpoint import Checkpoint, SpecDict
    from samsem.runtime.models.iospec import EngineSpec
    from samsem.runtime.models.segmenter import Backend, Segmenter


@dataclass(frozen=True)
class ModelFamily:
    """What samsem knows about one model family.

    name: registry key (stored in checkpoints and bundles); label: display name ("SAM2");
    spec_type: the frozen spec dataclass (a :class:`~samsem.runtime.models.checkpoint.SpecDict`);
    build(spec, seed): the raw network with random weights (CPU, eval mode), seed None = global RNG;
    wrap(raw) / unwrap(module): raw network <-> the module whose ``forward`` is the io-spec "model"
    graph (the checkpoint stores the raw network's weights); io(spec): io-specs by graph name;
    input_size(spec): side S of the square input; spec_name(spec): the config name reports record
    (None when the family has none); graphs: the graphs exported separately, in run
    order (each graph's inputs are model inputs or earlier graphs' outputs); preprocessing: what the
    segmenter does to a [0, 1] gray input (recorded in bundles); segmenter(backend, S): the runtime
    segmenter; export_modules(module): graph name -> ``nn.Module`` to export; named_spec: for
    families whose official weights come as plain ``{"model": state_dict}`` files without a samsem
    header, the spec of a config name (``--model CONFIG:PATH``, ``samsem export --config``) at an input
    size (None: the family's default), ConfigError for unknown names; None for families that only
    read samsem checkpoints.
    """

    name: str
    label: str
    spec_type: type[SpecDict]
    build: Callable[[Any, int | None], nn.Module]
    wrap: Callable[[nn.Module], nn.Module]
    unwrap: Callable[[nn.Module], nn.Module]
    io: Callable[[Any], dict[str, EngineSpec]]
    input_size: Callable[[Any], int]
    spec_name: Callable[[Any], str | None]
    graphs: tuple[str, ...]
    preprocessing: Mapping[str, Any]
    segmenter: Callable[[Backend, int], Segmenter]
    export_modules: Callable[[nn.Module], dict[str, nn.Module]]
    named_spec: Callable[[str, int | None], Any] | None = None

    def spec_from_dict(self, data: Any, path: str | Path | None = None) -> Any:
        """Parse a stored spec dict; InputError naming ``path`` when it does not describe this family."""
        try:
            return self.spec_type.from_dict(data)
        except (ConfigError, TypeError, ValueError) as exc:
            raise InputError(path, f"invalid {self.label} spec in checkpoint: {exc}") from exc


_MODULES: dict[str, str] = {}


def register_family(name: str, module: str) -> None:
    """Register the family ``name`` defined as ``FAMILY`` in ``module``; duplicate names are refused."""
    if name in _MODULES:
        raise ConfigError(f"model family {name!r} is already registered ({_MODULES[name]})")
    _MODULES[name] = module


register_family("sam2", "samsem.runtime.models.sam2")
register_family("lite", "samsem.runtime.models.lite")


def family_names() -> tuple[str, ...]:
    """Registered family names, sorted (no model code is imported)."""
    return tuple(sorted(_MODULES))


def get_family(name: str) -> ModelFamily:
    """The family registered as ``name``; ConfigError listing the valid names otherwise."""
    if name not in _MODULES:
        raise ConfigError(f"unknown model family {name!r}; expected one of {', '.join(family_names())}")
    family = importlib.import_module(_MODULES[name]).FAMILY
    if family.name != name:
        raise ConfigError(f"{_MODULES[name]} defines family {family.name!r}, registered as {name!r}")
    return family


def family_of(spec: Any) -> ModelFamily:
    """The family whose spec type ``spec`` is; ConfigError for other objects."""
    for name in family_names():
        family = get_family(name)
        if isinstance(spec, family.spec_type):
            return family
    raise ConfigError(f"{type(spec).__name__} is not the spec of a registered model family")


# ---------------------------------------------------------------------------------------------- weights


@dataclass(frozen=True)
class LoadedModel:
    """A model read from a checkpoint: its family, spec and io-spec "model" module (eval, on device)."""

    family: ModelFamily
    spec: Any
    module: nn.Module
    path: Path


def build_model(spec: Any, *, device: str = "cpu", seed: int | None = None) -> nn.Module:
    """The io-spec "model" module of ``spec`` with random weights (eval mode, on ``device``).

    seed: RNG seed of the initialisation (the global RNG is left untouched); None uses the global RNG.
    """
    from samsem.runtime.models.checkpoint import torch_device

    family = family_of(spec)
    return family.wrap(family.build(spec, seed)).to(torch_device(device)).eval()


def load_model(
    checkpoint: str | Path | Checkpoint,
    spec: Any = None,
    *,
    device: str = "cpu",
    family: str | None = None,
) -> LoadedModel:
    """Read a checkpoint (or take one already read) and build its model with strict weight loading.

    A samsem checkpoint names its family and stores its spec; a given ``spec`` must equal it
    (ConfigError). An official ``{"model": state_dict}`` file needs ``spec`` (e.g. a SAM2Spec from
    "CONFIG:PATH"). ``family``: the family the caller expects (InputError for another one). Foreign
    files, unknown families and weights that do not fit (missing, unexpected, misshaped keys, all
    named) are InputErrors naming the file.
    """
    from samsem.runtime.models.checkpoint import Checkpoint, load_state_strict, read_checkpoint, torch_device

    dev = torch_device(device)
    ckpt = (
        checkpoint if isinstance(checkpoint, Checkpoint) else read_checkpoint(checkpoint, _expected(family))
    )
    path = ckpt.path
    if ckpt.family is None:
        fam = family_of(spec) if spec is not None else None
        if fam is None or fam.named_spec is None or (family is not None and fam.name != family):
            raise InputError(
                path,
                'is a plain {"model": state_dict} file, not a samsem checkpoint (no header names its model)',
                'official weights with their config as "CONFIG:PATH", e.g. '
                f'"sam2.1_hiera_t:{path}", or a samsem checkpoint',
            )
    else:
        try:
            fam = get_family(ckpt.family)
        except ConfigError as exc:
            raise InputError(path, str(exc)) from None
        wanted = family or (family_of(spec).name if spec is not None else fam.name)
        if wanted != fam.name:
            raise InputError(
                path,
                f"is a samsem {fam.name!r} checkpoint, not a {get_family(wanted).label} one",
                _expected(wanted),
            )
        stored = fam.spec_from_dict(ckpt.spec, path)
        if spec is None:
            spec = stored
        elif stored != spec:
            raise ConfigError(f"{path} was saved with {stored}, not the requested {spec}")
    raw = fam.build(spec, None)
    name = fam.spec_name(spec)
    what = f"{fam.label} config {name!r}" if name else f"{fam.label} spec {spec}"
    load_state_strict(raw, ckpt.state, path, what, f"a checkpoint of this {fam.label} model")
    return LoadedModel(fam, spec, fam.wrap(raw).to(dev).eval(), path)


def _expected(family: str | None) -> str:
    if family is None:
        return f"a samsem checkpoint ({', '.join(family_names())}), or CONFIG:PATH for an official SAM2 one"
    return f"a samsem {get_family(family).label} checkpoint"


def save_model(
    path: str | Path, module: nn.Module, spec: Any, extra: Mapping[str, Any] | None = None
) -> None:
    """Write ``module`` (the io-spec "model" module of ``spec``) as a samsem checkpoint, atomically.

    Format: {"format": "samsem-checkpoint", "version": 1, "family", "spec": spec.to_dict(), "model":
    the raw network's state dict on CPU, **extra}; extra (training state) holds tensors and plain
    Python values only and may not reuse the reserved keys (ConfigError).
    """
    from samsem.runtime.models.checkpoint import write_checkpoint

    family = family_of(spec)
    raw = family.unwrap(module)
    if getattr(raw, "spec", spec) != spec:  # networks that record their spec must match it
        raise ConfigError(f"model was built with {raw.spec}, not {spec}")
    write_checkpoint(path, family.name, spec.to_dict(), raw, extra)
