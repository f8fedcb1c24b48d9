"""Model bundles: the manifest schema, reading, verification and loading into segmenters.

A bundle is a directory written by ``samsem export`` (:mod:`samsem.export.bundle_writer`)::

    BUNDLE/manifest.json
    BUNDLE/model1/encoder.onnx, decoder.onnx       (SAM2: two graphs; lite: model.onnx)
    BUNDLE/model1/encoder.fp16.plan, ...           (TensorRT engines, optional)
    BUNDLE/model1/model.fp16.pt2                   (AOTInductor package, optional)
    BUNDLE/model1/weights.pt                       (samsem checkpoint for the torch backend, optional)
    BUNDLE/model2/...                              (only when scale 2 has its own weights)

The manifest (format ``samsem-bundle``, version :data:`FORMAT_VERSION`) records the model family, each
model's spec and input size, the scales it serves, the sha256 of its source checkpoint, its io-spec
(:mod:`samsem.runtime.models.iospec`, with the TensorRT-style min/opt/max profile of every input),
every engine file with its sha256 and precision, the preprocessing, the pipeline configuration and the samsem version.

Loading (:func:`open_bundle`) refuses, each with an InputError naming the file: a missing manifest, a
newer format version, a malformed manifest, a missing or altered file (sha256), io-specs that differ
from what this runtime feeds the family at the recorded input size, preprocessing this runtime does not
apply, and a pipeline that would feed more points than the engines were built for. Batches larger
than a TensorRT profile's maximum are split by the backend.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from samsem.errors import ConfigError, InputError
from samsem.runtime.config import PipelineConfig
from samsem.runtime.models.iospec import BATCH, POINTS, EngineSpec

FORMAT = "samsem-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ENGINE_FORMATS = ("onnx", "tensorrt", "aoti", "torch")
BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt", "aoti")
_BACKEND_FORMAT = {"onnxruntime": "onnx", "tensorrt": "tensorrt", "aoti": "aoti", "torch": "torch"}
# pipeline options that belong to a run, not to the model: the caller's values replace the bundle's
RUN_OPTIONS = ("batch_size", "single_scale", "seed", "decision.fallback")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (streamed)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


# ---------------------------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class EngineFile:
    """One engine file: format (onnx | tensorrt | aoti | torch), the io-spec graph it implements
    ("encoder", "decoder" or "model"), its path relative to the bundle (posix), sha256, precision
    (fp32 | fp16) and free-form build details (opset, exporter, library versions, device)."""

    format: str
    graph: str
    file: str
    sha256: str
    precision: str
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "graph": self.graph,
            "file": self.file,
            "sha256": self.sha256,
            "precision": self.precision,
            "info": self.info,
        }


@dataclass(frozen=True)
class ModelEntry:
    """One model of the bundle.

    name: folder name ("model1"); scales: pipeline scales it serves ((1, 2) when shared); spec: the
    family's model spec dict; input_size: side S of its square input; source: {"file", "sha256"} of the
    checkpoint it was exported from; io: graph name -> EngineSpec; engines: its files.
    """

    name: str
    scales: tuple[int, ...]
    spec: dict[str, Any]
    input_size: int
    source: dict[str, str]
    io: dict[str, EngineSpec]
    engines: tuple[EngineFile, ...]

    def files(self, fmt: str) -> dict[str, EngineFile]:
        """Graph name -> engine file of one format (empty if the bundle has none)."""
        return {e.graph: e for e in self.engines if e.format == fmt}


@dataclass(frozen=True)
class Limits:
    """(min, opt, max) of the symbolic sizes the engines were built for: batch and points."""

    batch: tuple[int, int, int]
    points: tuple[int, int, int]

    def profile(self, engine: EngineSpec) -> dict[str, tuple[tuple[int, ...], ...]]:
        """Input name -> (min, opt, max) shapes of ``engine`` (see EngineSpec.profile)."""
        b, p = self.batch, self.points
        return engine.profile(b[0], b[1], b[2], p[2], points_min=p[0], points_opt=p[1])


@dataclass(frozen=True)
class Manifest:
    """The parsed manifest.json of a bundle (see the module docstring)."""

    family: str
    samsem_version: str
    limits: Limits
    preprocessing: dict[str, Any]
    pipeline: dict[str, Any]
    models: tuple[ModelEntry, ...]
    format_version: int = FORMAT_VERSION

    def model_for(self, scale: int) -> ModelEntry:
        return next(m for m in self.models if scale in m.scales)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; every io graph carries its min/opt/max input profile."""
        return {
            "format": FORMAT,
            "format_version": self.format_version,
            "samsem_version": self.samsem_version,
            "family": self.family,
            "limits": {BATCH: list(self.limits.batch), POINTS: list(self.limits.points)},
            "preprocessing": self.preprocessing,
            "pipeline": self.pipeline,
            "models": [
                {
                    "name": m.name,
                    "scales": list(m.scales),
                    "spec": m.spec,
                    "input_size": m.input_size,
                    "source": m.source,
                    "io": {
                        g: {**e.to_dict(), "profile": _jsonable(self.limits.profile(e))}
                        for g, e in m.io.items()
                    },
                    "engines": [e.to_dict() for e in m.engines],
                }
                for m in self.models
            ],
        }


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


class _Reader:
    """Typed access to manifest fields; any problem is an InputError naming the manifest and field."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, reason: str, expected: str | None = None) -> InputError:
        return InputError(self.path, f"invalid bundle manifest: {where} {reason}", expected)

    def get(self, data: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
        if not isinstance(data, dict) or key not in data:
            raise self.fail(f"{where}.{key}", "is missing")
        value = data[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            raise self.fail(f"{where}.{key}", f"is {value!r}", _kind_name(kind))
        return value

    def triple(self, value: Any, where: str) -> tuple[int, int, int]:
        if (
            not isinstance(value, list)
            or len(value) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            or not 1 <= value[0] <= value[1] <= value[2]
        ):
            raise self.fail(where, f"is {value!r}", "[min, opt, max] with 1 <= min <= opt <= max")
        return (value[0], value[1], value[2])


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def manifest_from_dict(data: Any, path: Path) -> Manifest:
    """Validate and parse a manifest dict (``path`` names the file in errors)."""
    r = _Reader(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise InputError(path, f"not a samsem bundle manifest (format {found!r})", f"format {FORMAT!r}")
    version = r.get(data, "format_version", int, "manifest")
    if version > FORMAT_VERSION:
        raise InputError(
            path,
            f"bundle format version {version} is newer than this samsem reads ({FORMAT_VERSION})",
            "a bundle exported by this samsem version or older, or a newer samsem",
        )
    if version < 1:
        raise r.fail("format_version", f"is {version}", ">= 1")
    limits_d = r.get(data, "limits", dict, "manifest")
    limits = Limits(
        r.triple(limits_d.get(BATCH), f"limits.{BATCH}"), r.triple(limits_d.get(POINTS), f"limits.{POINTS}")
    )
    models = []
    for i, m in enumerate(r.get(data, "models", list, "manifest")):
        where = f"models[{i}]"
        io = {}
        for g, spec in r.get(m, "io", dict, where).items():
            try:
                io[g] = EngineSpec.from_dict(spec)
            except (KeyError, TypeError, ValueError) as exc:
                raise r.fail(f"{where}.io.{g}", f"is not an io-spec ({exc})") from exc
        engines = []
        for j, e in enumerate(r.get(m, "engines", list, where)):
            ew = f"{where}.engines[{j}]"
            ef = EngineFile(
                r.get(e, "format", str, ew),
                r.get(e, "graph", str, ew),
                r.get(e, "file", str, ew),
                r.get(e, "sha256", str, ew),
                r.get(e, "precision", str, ew),
                r.get(e, "info", dict, ew),
            )
            if ef.format not in ENGINE_FORMATS:
                raise r.fail(f"{ew}.format", f"is {ef.format!r}", " | ".join(ENGINE_FORMATS))
            if ef.graph not in io:
                raise r.fail(f"{ew}.graph", f"{ef.graph!r} has no io-spec", f"one of {sorted(io)}")
            if Path(ef.file).is_absolute() or ".." in Path(ef.file).parts:
                raise r.fail(f"{ew}.file", f"{ef.file!r} points outside the bundle", "a relative path")
            engines.append(ef)
        scales = r.get(m, "scales", list, where)
        models.append(
            ModelEntry(
                r.get(m, "name", str, where),
                tuple(scales),
                r.get(m, "spec", dict, where),
                r.get(m, "input_size", int, where),
                r.get(m, "source", dict, where),
                io,
                tuple(engines),
            )
        )
    covered = sorted(s for m in models for s in m.scales)
    if covered != [1, 2]:
        raise r.fail("models[].scales", f"cover scales {covered}", "scales 1 and 2, each exactly once")
    return Manifest(
        family=r.get(data, "family", str, "manifest"),
        samsem_version=r.get(data, "samsem_version", str, "manifest"),
        limits=limits,
        preprocessing=r.get(data, "preprocessing", dict, "manifest"),
        pipeline=r.get(data, "pipeline", dict, "manifest"),
        models=tuple(models),
        format_version=version,
    )


def read_manifest(bundle: str | Path) -> Manifest:
    """Read and validate ``BUNDLE/manifest.json`` (schema and format version only; no file checks)."""
    path = Path(bundle) / MANIFEST
    if not path.is_file():
        raise InputError(
            bundle,
            f"is not a model bundle: {MANIFEST} is missing (other directories are not supported)",
            "a samsem export directory",
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"unreadable bundle manifest ({exc})") from exc
    return manifest_from_dict(data, path)


def verify_files(bundle: str | Path, manifest: Manifest) -> None:
    """Check that every engine file listed in the manifest exists and has its recorded sha256."""
    root = Path(bundle)
    for model in manifest.models:
        for e in model.engines:
            path = root / e.file
            if not path.is_file():
                raise InputError(path, f"bundle file is missing ({e.format} {e.graph} of {model.name})")
            digest = sha256_file(path)
            if digest != e.sha256:
                raise InputError(
                    path,
                    f"bundle file was altered: sha256 {digest[:16]}... != manifest {e.sha256[:16]}...",
                    "the file as exported (re-export the bundle)",
                )


# ------------------------------------------------------------------------------------------- families


@dataclass(frozen=True)
class Family:
    """What the runtime knows about one model family.

    graphs: io-spec keys exported as separate graphs, in the order they run (the engines chain:
    each graph's inputs come from the model inputs or earlier graphs' outputs); io(spec dict) -> the
    io-spec the runtime feeds; preprocessing: what its segmenter does to a [0, 1] gray input;
    segmenter(backend, input_size); torch_backend(weights file, device, precision).
    """

    name: str
    graphs: tuple[str, ...]
    io: Callable[[dict[str, Any]], dict[str, EngineSpec]]
    preprocessing: dict[str, Any]
    segmenter: Callable[[Any, int], Any]
    torch_backend: Callable[[Path, str, str], Any]


def _sam2_io(spec: dict[str, Any]) -> dict[str, EngineSpec]:
    from samsem.runtime.models.sam2 import SAM2Spec, geometry

    return geometry(SAM2Spec.from_dict(spec)).engines()


def _sam2_segmenter(backend: Any, input_size: int) -> Any:
    from samsem.runtime.models.sam2 import SAM2Segmenter

    return SAM2Segmenter(backend, input_size)


def _sam2_torch(weights: Path, device: str, precision: str) -> Any:
    from samsem.runtime.backends.pytorch import TorchBackend
    from samsem.runtime.models.sam2 import SAM2ImageModel, load_sam2

    sam, _ = load_sam2(weights, device=device)
    return TorchBackend(SAM2ImageModel(sam), device=device, precision=precision)


def _sam2_preprocessing() -> dict[str, Any]:
    from samsem.runtime.models.sam2 import PIXEL_MEAN, PIXEL_STD

    return {"channels": "gray replicated to 3", "mean": list(PIXEL_MEAN), "std": list(PIXEL_STD)}


def _lite_io(spec: dict[str, Any]) -> dict[str, EngineSpec]:
    from samsem.runtime.models.lite import LiteSpec

    return LiteSpec.from_dict(spec).engines()


def _lite_segmenter(backend: Any, input_size: int) -> Any:
    from samsem.runtime.models.lite import LiteSegmenter

    return LiteSegmenter(backend, input_size)


def _lite_torch(weights: Path, device: str, precision: str) -> Any:
    from samsem.runtime.backends.pytorch import TorchBackend
    from samsem.runtime.models.lite import load_lite

    model, _ = load_lite(weights, device=device)
    return TorchBackend(model, device=device, precision=precision)


def family(name: str) -> Family:
    """The runtime description of a model family ("sam2" or "lite"); ConfigError for others."""
    if name == "sam2":
        return Family(
            "sam2", ("encoder", "decoder"), _sam2_io, _sam2_preprocessing(), _sam2_segmenter, _sam2_torch
        )
    if name == "lite":
        pre = {"channels": "gray (1 channel)", "mean": None, "std": None}
        return Family("lite", ("model",), _lite_io, pre, _lite_segmenter, _lite_torch)
    raise ConfigError(f"unknown model family {name!r}; expected sam2 or lite")


def preprocessing(fam: Family, config: PipelineConfig) -> dict[str, Any]:
    """The manifest's preprocessing record: intensity percentiles + the family's input transform."""
    return {
        "intensity_percentiles": [config.low_pct, config.high_pct],
        "range": [0.0, 1.0],
        "resize": "area when shrinking, bilinear when enlarging",
        **fam.preprocessing,
    }


# -------------------------------------------------------------------------------------- pipeline config


def pipeline_config_from_dict(data: Mapping[str, Any]) -> PipelineConfig:
    """Inverse of PipelineConfig.to_dict(); ConfigError for unknown or invalid fields."""
    from samsem.runtime.stages.classical import ClassicalConfig
    from samsem.runtime.stages.decision import DecisionConfig
    from samsem.runtime.stages.prompts import PromptConfig
    from samsem.runtime.stages.tiling import TilingConfig

    nested = {
        "tiling": TilingConfig,
        "prompts": PromptConfig,
        "decision": DecisionConfig,
        "fallback": ClassicalConfig,
    }
    try:
        values = {k: nested[k](**v) if k in nested else v for k, v in data.items()}
        return PipelineConfig(**values)
    except TypeError as exc:
        raise ConfigError(f"invalid pipeline configuration: {exc}") from exc


def merge_run_options(stored: PipelineConfig, run: PipelineConfig | None) -> PipelineConfig:
    """The bundle's pipeline configuration with the caller's run options (:data:`RUN_OPTIONS`)."""
    if run is None:
        return stored
    return replace(
        stored,
        batch_size=run.batch_size,
        single_scale=run.single_scale,
        seed=run.seed,
        decision=replace(stored.decision, fallback=run.decision.fallback),
    )


# ------------------------------------------------------------------------------------------ open / load


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: its directory, manifest, family and stored pipeline configuration."""

    path: Path
    manifest: Manifest
    family: Family
    config: PipelineConfig


def open_bundle(path: str | Path) -> Bundle:
    """Read, validate and verify a bundle (see the module docstring for what is refused)."""
    root = Path(path)
    manifest = read_manifest(root)
    mpath = root / MANIFEST
    try:
        fam = family(manifest.family)
    except ConfigError as exc:
        raise InputError(mpath, str(exc)) from exc
    try:
        config = pipeline_config_from_dict(manifest.pipeline)
    except ConfigError as exc:
        raise InputError(mpath, str(exc)) from exc
    want_pre = preprocessing(fam, config)
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
        try:
            want = fam.io(model.spec)
        except (ConfigError, TypeError, ValueError) as exc:
            raise InputError(mpath, f"invalid {fam.name} spec of {model.name}: {exc}") from exc
        sizes = {t.dims[-1] for e in want.values() for t in e.inputs if t.name == "image"}
        if sizes != {model.input_size}:
            raise InputError(mpath, f"{model.name} input_size {model.input_size} != its spec's {sizes}")
        for g in (*fam.graphs, "model"):
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
    return Bundle(root, manifest, fam, config)


def _describe(engine: EngineSpec) -> str:
    return "; ".join(f"{t.name}{tuple(t.dims)}" for t in (*engine.inputs, *engine.outputs))


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def available_backends(bundle: Bundle, device: str) -> dict[str, str | None]:
    """Backend -> None if usable with this bundle and device, else the reason it is not (in auto order)."""
    import torch

    dev = torch.device(device)
    formats = {e.format for m in bundle.manifest.models for e in m.engines}
    out: dict[str, str | None] = {}
    for backend in BACKENDS[1:]:
        fmt = _BACKEND_FORMAT[backend]
        reason = None
        if fmt not in formats:
            reason = f"the bundle has no {fmt} files"
        elif backend == "tensorrt":
            if importlib.util.find_spec("tensorrt") is None:
                reason = "tensorrt is not installed"
            elif dev.type != "cuda" or not _has_cuda():
                reason = "needs a CUDA device"
        elif backend == "onnxruntime" and importlib.util.find_spec("onnxruntime") is None:
            reason = "onnxruntime is not installed"
        elif backend == "aoti":
            devices = {
                e.info.get("device") for m in bundle.manifest.models for e in m.engines if e.format == fmt
            }
            if devices != {dev.type}:
                reason = (
                    f"the AOTInductor package was compiled for {sorted(map(str, devices))}, not {dev.type}"
                )
        out[backend] = reason
    return out


AUTO_ORDER = ("tensorrt", "aoti", "onnxruntime", "torch")


def pick_backend(bundle: Bundle, backend: str, device: str) -> tuple[str, str]:
    """(backend, note): the requested backend if usable, or for "auto" the fastest usable one in
    :data:`AUTO_ORDER` (AOTInductor only on CUDA); ConfigError naming why otherwise."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    usable = available_backends(bundle, device)
    if backend != "auto":
        if usable[backend] is not None:
            raise ConfigError(f"backend {backend} cannot run bundle {bundle.path}: {usable[backend]}")
        return backend, "requested"
    import torch

    skipped = []
    for name in AUTO_ORDER:
        if name == "aoti" and torch.device(device).type != "cuda":
            usable[name] = usable[name] or "auto uses it on CUDA only"
        if usable[name] is None:
            note = "auto: " + "; ".join([*skipped, f"picked {name}"])
            return name, note
        skipped.append(f"{name} skipped ({usable[name]})")
    raise ConfigError(f"no backend can run bundle {bundle.path} on {device}: " + "; ".join(skipped))


def make_backend(bundle: Bundle, model: ModelEntry, backend: str, device: str, precision: str) -> Any:
    """Build the Backend of one model entry for a concrete (already picked) backend name."""
    root = bundle.path
    fmt = _BACKEND_FORMAT[backend]
    files = model.files(fmt)
    if backend == "torch":
        return bundle.family.torch_backend(root / files["model"].file, device, precision)
    if backend == "aoti":
        from samsem.runtime.backends.aoti import AotiBackend

        return AotiBackend(root / files["model"].file, model.io["model"], device)
    graphs = [(model.io[g], root / files[g].file) for g in bundle.family.graphs]
    if backend == "onnxruntime":
        from samsem.runtime.backends.ort import OnnxBackend

        return OnnxBackend(model.io["model"], graphs, device)
    from samsem.runtime.backends.trt import TensorRTBackend

    return TensorRTBackend(model.io["model"], graphs, device)


def engine_precision(model: ModelEntry, backend: str, requested: str) -> str:
    """Precision a backend runs at: the torch backend's is the requested one, engines' is fixed at export."""
    if backend == "torch":
        return requested
    return next(iter(model.files(_BACKEND_FORMAT[backend]).values())).precision


def load_bundle(
    path: str | Path, *, backend: str = "auto", device: str = "cpu", precision: str = "fp32"
) -> tuple[list[tuple[Any, tuple[int, ...]]], dict[str, Any], Bundle]:
    """Open and verify a bundle and build its segmenters.

    Returns ([(segmenter, scales) per model], description, bundle). ``precision`` applies to the torch
    backend; engine backends run at the precision they were built with (reported in the description).
    """
    bundle = open_bundle(path)
    name, note = pick_backend(bundle, backend, device)
    segs = []
    for model in bundle.manifest.models:
        be = make_backend(bundle, model, name, device, precision)
        segs.append((bundle.family.segmenter(be, model.input_size), model.scales))
    first = bundle.manifest.models[0]
    description: dict[str, Any] = {
        "family": bundle.manifest.family,
        "backend": name,
        "backend_choice": note,
        "device": device,
        "precision": engine_precision(first, name, precision),
        "source": str(bundle.path),
        "bundle_format_version": bundle.manifest.format_version,
        "input_size": [m.input_size for m in bundle.manifest.models]
        if len(bundle.manifest.models) > 1
        else first.input_size,
        "checkpoint_sha256": [m.source.get("sha256") for m in bundle.manifest.models],
    }
    if bundle.manifest.family == "sam2":
        configs = [m.spec.get("config") for m in bundle.manifest.models]
        description["config"] = configs[0] if len(configs) == 1 else configs
    return segs, description, bundle
