"""The bundle manifest: schema, parsing with field-by-field validation, and file verification.

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
every engine file with its sha256 and precision, the preprocessing, the pipeline configuration and
the samsem version. :func:`read_manifest` refuses a missing manifest, a newer format version and a
malformed manifest, :func:`verify_files` a missing or altered file, each with an InputError naming the
file; checks against the model family are :func:`samsem.runtime.bundle.open.open_bundle`'s.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from samsem.errors import InputError
from samsem.runtime.models.iospec import BATCH, POINTS, EngineSpec, Shape

if TYPE_CHECKING:
    from samsem.runtime.models.registry import ModelFamily

FORMAT = "samsem-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ENGINE_FORMATS = ("onnx", "tensorrt", "aoti", "torch")


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

    def profile(self, engine: EngineSpec) -> dict[str, tuple[Shape, Shape, Shape]]:
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


def preprocessing(family: ModelFamily, low_pct: float, high_pct: float) -> dict[str, Any]:
    """The manifest's preprocessing record: intensity percentiles + the family's input transform."""
    return {
        "intensity_percentiles": [low_pct, high_pct],
        "range": [0.0, 1.0],
        "resize": "area when shrinking, bilinear when enlarging",
        **family.preprocessing,
    }
