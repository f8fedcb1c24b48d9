"""Open a model bundle: verify it against its model family, pick a backend, build its segmenters.

:func:`open_bundle` refuses, each with an InputError naming the file, what :mod:`.manifest` refuses plus
an unknown family, io-specs that differ from what this runtime feeds the family at the recorded input
size, preprocessing this runtime does not apply, and a pipeline that would feed more points than the
engines were built for. :func:`pick_backend` chooses among the registered backends
(:mod:`samsem.runtime.backends.base`), :func:`bundle_segmenters` builds one segmenter per model entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from samsem.errors import ConfigError, InputError
from samsem.runtime.backends.base import EngineFiles, backend_names, get_backend
from samsem.runtime.bundle.manifest import (
    MANIFEST,
    Manifest,
    ModelEntry,
    preprocessing,
    read_manifest,
    verify_files,
)
from samsem.runtime.config import PipelineConfig
from samsem.runtime.models.iospec import POINTS, EngineSpec
from samsem.runtime.models.registry import ModelFamily, get_family
from samsem.runtime.models.segmenter import Segmenter


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: its directory, manifest, family and stored pipeline configuration."""

    path: Path
    manifest: Manifest
    family: ModelFamily
    config: PipelineConfig

    def engine_files(self, model: ModelEntry, fmt: str) -> EngineFiles:
        """What a backend factory needs to run ``model`` from its files of format ``fmt``."""
        files = model.files(fmt)
        return EngineFiles(
            family=self.family,
            io=model.io,
            files={g: self.path / e.file for g, e in files.items()},
            built_for=frozenset(str(e.info["device"]) for e in files.values() if "device" in e.info),
        )


def open_bundle(path: str | Path) -> Bundle:
    """Read, validate and verify a bundle (see the module docstring for what is refused)."""
    root = Path(path)
    manifest = read_manifest(root)
    mpath = root / MANIFEST
    try:
        family = get_family(manifest.family)
        config = PipelineConfig.from_dict(manifest.pipeline)
    except ConfigError as exc:
        raise InputError(mpath, str(exc)) from exc
    want_pre = preprocessing(family, config.low_pct, config.high_pct)
    if manifest.preprocessing != want_pre:
        raise InputError(
            mpath,
            f"bundle preprocessing {manifest.preprocessing} differs from what this samsem applies",
            str(want_pre),
        )
    takes_points = any(POINTS in t.dims for m in manifest.models for e in m.io.values() for t in e.inputs)
    if takes_points and config.prompts.n_points > manifest.limits.points[2]:
        raise InputError(
            mpath,
            f"pipeline uses {config.prompts.n_points} point prompts but the engines take at most "
            f"{manifest.limits.points[2]}",
            "a bundle exported with --max-points >= prompts.n_points",
        )
    for model in manifest.models:
        spec = family.spec_from_dict(model.spec, mpath)
        try:
            want = family.io(spec)
        except (ConfigError, TypeError, ValueError) as exc:
            raise InputError(mpath, f"invalid {family.label} spec of {model.name}: {exc}") from exc
        if family.input_size(spec) != model.input_size:
            raise InputError(
                mpath, f"{model.name} input_size {model.input_size} != its spec's {family.input_size(spec)}"
            )
        for g in (*family.graphs, "model"):
            if g not in model.io:
                raise InputError(mpath, f"{model.name} has no io-spec for graph {g!r}")
            if model.io[g] != want[g]:
                raise InputError(
                    mpath,
                    f"{model.name} graph {g!r} was built for other shapes: "
                    f"{_describe(model.io[g])} (this samsem feeds {_describe(want[g])})",
                    "a bundle exported by a compatible samsem for this model",
                )
    verify_files(root, manifest)
    return Bundle(root, manifest, family, config)


def _describe(engine: EngineSpec) -> str:
    return "; ".join(f"{t.name}{tuple(t.dims)}" for t in (*engine.inputs, *engine.outputs))


def available_backends(bundle: Bundle, device: str) -> dict[str, str | None]:
    """Backend name -> None if usable with this bundle and device, else why not (in ``auto``'s order)."""
    out: dict[str, str | None] = {}
    for name in backend_names():
        entry = get_backend(name)
        models = bundle.manifest.models
        if not all(m.files(entry.format) for m in models):
            out[name] = f"the bundle has no {entry.format} files"
            continue
        reasons = {entry.unavailable(device, bundle.engine_files(m, entry.format)) for m in models} - {None}
        out[name] = "; ".join(sorted(r for r in reasons if r)) or None
    return out


def pick_backend(bundle: Bundle, backend: str, device: str) -> tuple[str, str]:
    """(backend, note): the requested backend if usable, or for "auto" the first usable one in the
    registry's order (backends that are not ``auto_on_cpu`` only on CUDA); ConfigError naming why not."""
    if backend != "auto":
        get_backend(backend)  # ConfigError listing the valid names
    usable = available_backends(bundle, device)
    if backend != "auto":
        if usable[backend] is not None:
            raise ConfigError(f"backend {backend} cannot run bundle {bundle.path}: {usable[backend]}")
        return backend, "requested"
    import torch

    skipped: list[str] = []
    for name, reason in usable.items():
        if reason is None and not get_backend(name).auto_on_cpu and torch.device(device).type != "cuda":
            reason = "auto uses it on CUDA only"
        if reason is None:
            return name, "auto: " + "; ".join([*skipped, f"picked {name}"])
        skipped.append(f"{name} skipped ({reason})")
    raise ConfigError(f"no backend can run bundle {bundle.path} on {device}: " + "; ".join(skipped))


@dataclass(frozen=True)
class BundleSegmenters:
    """A bundle's segmenters: one per model entry with the scales it serves, and how they run."""

    bundle: Bundle
    segmenters: tuple[tuple[Segmenter, tuple[int, ...]], ...]
    backend: str
    backend_choice: str
    precision: str

    def for_scale(self, scale: int) -> Segmenter:
        return next(seg for seg, scales in self.segmenters if scale in scales)


def bundle_segmenters(
    path: str | Path, *, backend: str = "auto", device: str = "cpu", precision: str = "fp32"
) -> BundleSegmenters:
    """Open and verify a bundle and build its segmenters on the chosen backend.

    ``precision`` applies to backends whose precision is chosen at run time (torch); engines run at the
    precision they were built with.
    """
    bundle = open_bundle(path)
    name, note = pick_backend(bundle, backend, device)
    entry = get_backend(name)
    segmenters = []
    for model in bundle.manifest.models:
        be = entry.create(bundle.engine_files(model, entry.format), device, precision)
        segmenters.append((bundle.family.segmenter(be, model.input_size), model.scales))
    first = bundle.manifest.models[0]
    used: Any = (
        next(iter(first.files(entry.format).values())).precision if entry.fixed_precision else precision
    )
    return BundleSegmenters(bundle, tuple(segmenters), name, note, used)
