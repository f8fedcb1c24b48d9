"""Write a model bundle (see :mod:`samsem.runtime.bundle.manifest` for the layout and the manifest schema).

:func:`write_bundle` loads one or two checkpoints (SAM2: samsem or official with a config; lite: samsem),
exports the requested formats per model and writes ``manifest.json`` last. The bundle is assembled in
a temporary sibling directory and moved into place at the end, so an interrupted export leaves no
half-written bundle. Every ONNX chain is checked against PyTorch at export on a batch and point count
different from the traced ones (ONNX Runtime CPU), which catches shapes baked in by tracing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from samsem import __version__
from samsem.errors import ConfigError, InputError
from samsem.export.onnx_export import EXAMPLE_SIZES, example_inputs, export_onnx, run_onnx
from samsem.runtime.backends.base import chain
from samsem.runtime.bundle import manifest as rb
from samsem.runtime.config import PipelineConfig
from samsem.runtime.models.iospec import BATCH, POINTS
from samsem.runtime.models.registry import LoadedModel, save_model

FORMATS = ("onnx", "trt", "aoti", "torch")
PARITY_SIZES = {BATCH: 3, POINTS: 2}  # differ from the trace sizes on purpose
PARITY_RTOL = 1e-3  # max |onnx - torch| <= PARITY_RTOL * max(1, max |torch|)


@dataclass(frozen=True)
class ExportOptions:
    """What to build.

    formats: subset of :data:`FORMATS` ("trt" implies the ONNX graphs it is built from); fp16: TensorRT
    and AOTInductor in FP16 (ONNX graphs are always fp32); batch_opt/batch_max: the profile's batch
    (opt defaults to the pipeline's batch size); points_max: most point prompts (default: the
    pipeline's count); exporter/opset: see :mod:`samsem.export.onnx_export`; aoti_device: device the
    AOTInductor package is compiled for; timing_cache: TensorRT timing cache file.
    """

    formats: tuple[str, ...] = ("onnx", "torch")
    fp16: bool = False
    batch_opt: int | None = None
    batch_max: int = 16
    points_max: int | None = None
    exporter: str = "torchscript"
    opset: int = 17
    aoti_device: str = "cuda"
    timing_cache: Path | None = None
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.formats) - set(FORMATS))
        if unknown or not self.formats:
            raise ConfigError(
                f"unknown export format(s) {unknown or '(none)'}; expected some of {', '.join(FORMATS)}"
            )

    def limits(self) -> rb.Limits:
        cfg = self.pipeline
        opt = self.batch_opt or cfg.batch_size
        p_opt = cfg.prompts.n_points
        p_max = self.points_max or p_opt
        if not 1 <= opt <= self.batch_max:
            raise ConfigError(f"need 1 <= batch opt ({opt}) <= max batch ({self.batch_max})")
        if p_max < p_opt:
            raise ConfigError(f"max points {p_max} < the pipeline's {p_opt} point prompts")
        return rb.Limits((1, opt, self.batch_max), (1, p_opt, p_max))


def load_for_export(checkpoint: Path, config: str | None, image_size: int | None) -> LoadedModel:
    """Load a checkpoint of any family. ``config``/``image_size`` name the model of official weights
    (config name of a family that has such files); a samsem checkpoint carries its spec and given values
    must match it."""
    from samsem.runtime.models.checkpoint import read_checkpoint
    from samsem.runtime.models.registry import get_family, load_model

    ckpt = read_checkpoint(checkpoint, "a samsem checkpoint, or official weights with --config")
    if ckpt.family is None:
        if config is None:
            raise InputError(
                checkpoint, "official checkpoints do not name their config", "--config NAME_OR_YAML"
            )
        return load_model(ckpt, _official_spec(config, image_size))
    loaded = load_model(ckpt)
    family = get_family(ckpt.family)
    stored = (family.spec_name(loaded.spec), family.input_size(loaded.spec))
    wanted = (config or stored[0], image_size or stored[1])
    if (config is not None or image_size is not None) and wanted != stored:
        named = f"{stored[0]} at " if stored[0] else ""
        raise ConfigError(
            f"{checkpoint} was saved as {named}{stored[1]} px; drop or match --config/--image-size"
        )
    return loaded


def _official_spec(config: str, image_size: int | None) -> Any:
    """The spec of official weights named by ``config`` at ``image_size`` (default: the family's)."""
    from samsem.runtime.models.registry import family_names, get_family

    for name in family_names():
        named_spec = get_family(name).named_spec
        if named_spec is None:
            continue
        try:
            return named_spec(config, image_size)
        except ConfigError:
            continue
    raise ConfigError(f"unknown model config {config!r} for official checkpoints")


def _engine(
    root: Path, fmt: str, graph: str, path: Path, precision: str, info: dict[str, Any]
) -> rb.EngineFile:
    return rb.EngineFile(fmt, graph, path.relative_to(root).as_posix(), rb.sha256_file(path), precision, info)


def _check_onnx_parity(module: nn.Module, io: dict, graphs: Sequence[str], files: dict[str, Path]) -> float:
    """Run the ONNX chain and the PyTorch model on PARITY_SIZES inputs; returns the max |diff|."""
    spec = io["model"]
    args = example_inputs(spec, PARITY_SIZES, seed=1)
    with torch.no_grad():
        ref = module(*args)
    ref = (ref,) if isinstance(ref, torch.Tensor) else ref
    pool = {t.name: a.numpy() for t, a in zip(spec.inputs, args, strict=True)}
    chain([(io[g], partial(run_onnx, files[g], io[g])) for g in graphs], pool)
    worst = 0.0
    for t, r in zip(spec.outputs, ref, strict=True):
        r = r.numpy()
        diff = float(np.abs(pool[t.name] - r).max())
        if not np.isfinite(diff) or diff > PARITY_RTOL * max(1.0, float(np.abs(r).max())):
            raise InputError(
                files[graphs[-1]],
                f"exported ONNX output {t.name} differs from PyTorch by {diff:.3g} at batch "
                f"{PARITY_SIZES[BATCH]}, points {PARITY_SIZES[POINTS]} (traced at {EXAMPLE_SIZES})",
                "a traceable model (no shape-dependent Python control flow)",
            )
        worst = max(worst, diff)
    return worst


def _export_model(
    root: Path, name: str, loaded: LoadedModel, options: ExportOptions, limits: rb.Limits
) -> list[rb.EngineFile]:
    fam = loaded.family
    io = fam.io(loaded.spec)
    folder = root / name
    folder.mkdir()
    engines: list[rb.EngineFile] = []
    if "torch" in options.formats:
        path = folder / "weights.pt"
        save_model(path, loaded.module, loaded.spec)
        engines.append(_engine(root, "torch", "model", path, "fp32", {"torch": torch.__version__}))
    modules = fam.export_modules(loaded.module)
    if {"onnx", "trt"} & set(options.formats):
        files = {}
        for g in fam.graphs:
            files[g] = folder / f"{g}.onnx"
            info = export_onnx(
                modules[g],
                io[g],
                files[g],
                opset=options.opset,
                exporter=options.exporter,
                max_sizes={BATCH: limits.batch[2], POINTS: limits.points[2]},
            )
            engines.append(_engine(root, "onnx", g, files[g], "fp32", info))
        worst = _check_onnx_parity(modules["model"], io, fam.graphs, files)
        engines[-1].info["parity_max_abs_diff"] = worst
    precision = "fp16" if options.fp16 else "fp32"
    if "trt" in options.formats:
        from samsem.export.trt_build import build_engine

        for g in fam.graphs:
            plan = folder / f"{g}.{precision}.plan"
            info = build_engine(
                folder / f"{g}.onnx",
                io[g],
                plan,
                limits=limits,
                fp16=options.fp16,
                timing_cache=options.timing_cache,
            )
            engines.append(_engine(root, "tensorrt", g, plan, precision, info))
    if "aoti" in options.formats:
        from samsem.export.aoti import compile_aoti

        package = folder / f"model.{precision}.pt2"
        info = compile_aoti(
            modules["model"],
            io["model"],
            package,
            limits=limits,
            device=options.aoti_device,
            fp16=options.fp16,
        )
        engines.append(_engine(root, "aoti", "model", package, precision, info))
    return engines


# format -> (module it needs, how to install it)
FORMAT_NEEDS = {
    "onnx": ("onnx", "pip install 'samsem[onnx]'"),
    "trt": ("tensorrt", "pip install 'samsem[trt]' on a host with an NVIDIA GPU and CUDA"),
}


def check_requirements(options: ExportOptions) -> None:
    """ConfigError naming what to install (or which device is missing) for the requested formats, before
    any work is done."""
    import importlib.util

    for fmt, (module, install) in FORMAT_NEEDS.items():
        wanted = fmt in options.formats or (fmt == "onnx" and "trt" in options.formats)
        if wanted and importlib.util.find_spec(module) is None:
            raise ConfigError(f"--formats {fmt} needs {module}, which is not installed: {install}")
    if "trt" in options.formats and not torch.cuda.is_available():
        raise ConfigError("--formats trt builds TensorRT engines on a CUDA GPU; this host has none")
    if "aoti" in options.formats and options.aoti_device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"--formats aoti compiles for --aoti-device {options.aoti_device}, but CUDA is not available "
            "(use --aoti-device cpu)"
        )


def write_bundle(
    out: str | Path,
    checkpoints: Sequence[str | Path],
    *,
    config: str | None = None,
    image_size: int | None = None,
    options: ExportOptions | None = None,
    overwrite: bool = False,
) -> rb.Manifest:
    """Export one checkpoint (both scales) or two (scale 1, scale 2) into the bundle directory ``out``.

    Two files with the same sha256 give one model. Returns the manifest written.
    """
    options = options or ExportOptions()
    check_requirements(options)
    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(out, "already exists", "a new directory, or --overwrite")
    if not 1 <= len(checkpoints) <= 2:
        raise ConfigError(f"a bundle holds one or two checkpoints, got {len(checkpoints)}")
    paths = [Path(c) for c in checkpoints]
    for p in paths:
        if not p.is_file():
            raise InputError(p, "checkpoint file not found")
    digests = [rb.sha256_file(p) for p in paths]
    if len(paths) == 2 and digests[0] == digests[1]:
        paths, digests = paths[:1], digests[:1]
    limits = options.limits()
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        models = []
        families = set()
        for i, (path, digest) in enumerate(zip(paths, digests, strict=True)):
            loaded = load_for_export(path, config, image_size)
            families.add(loaded.family.name)
            if len(families) > 1:
                raise ConfigError(f"both checkpoints must be of one model family, got {sorted(families)}")
            name = f"model{i + 1}"
            engines = _export_model(tmp, name, loaded, options, limits)
            scales = (1, 2) if len(paths) == 1 else (i + 1,)
            fam = loaded.family
            models.append(
                rb.ModelEntry(
                    name,
                    scales,
                    loaded.spec.to_dict(),
                    fam.input_size(loaded.spec),
                    {"file": path.name, "sha256": digest},
                    fam.io(loaded.spec),
                    tuple(engines),
                )
            )
        manifest = rb.Manifest(
            family=fam.name,
            samsem_version=__version__,
            limits=limits,
            preprocessing=rb.preprocessing(fam, options.pipeline.low_pct, options.pipeline.high_pct),
            pipeline=options.pipeline.to_dict(),
            models=tuple(models),
        )
        from samsem.io import write_json

        write_json(tmp / rb.MANIFEST, manifest.to_dict())
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest
