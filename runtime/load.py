"""The single entry from a user's ``--model`` argument to the two segmenters of the pipeline.

Accepted forms (one source serves both scales; two comma-separated sources give scale 1 and 2):

* ``PATH`` — a samsem checkpoint (.pt; it stores its family, "sam2" or "lite", and its spec);
* ``CONFIG:PATH`` — an official SAM2 checkpoint with its config name or YAML path, e.g.
  ``sam2.1_hiera_t:/ckpt/sam2.1_hiera_tiny.pt`` (samsem checkpoints accept it too, if it matches);
* ``SRC1,SRC2`` — two of the above, for the whole-image and the patch scale;
* ``BUNDLE_DIR`` — a model bundle written by ``samsem export`` (one or two models inside, run on
  ``--backend auto|torch|onnxruntime|tensorrt|aoti``; see :mod:`samsem.runtime.bundle.manifest`).

``None`` means "no model": :func:`resolve_model_arg` and :func:`load_models` return None and the caller
decides what runs instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from samsem.errors import ConfigError, InputError
from samsem.runtime.bundle.manifest import BACKENDS
from samsem.runtime.config import PipelineConfig
from samsem.runtime.models.segmenter import Segmenter


@dataclass(frozen=True)
class ModelSource:
    """One weights file and, for official checkpoints, its SAM2 config (name or YAML path)."""

    path: Path
    config: str | None = None

    def __str__(self) -> str:
        return f"{self.config}:{self.path}" if self.config else str(self.path)


@dataclass(frozen=True)
class LoadedModels:
    """Segmenters for scale 1 (whole image) and scale 2 (patches) and a description for reports.

    model2 is model1 when one set of weights serves both scales. description: family, source, config
    (SAM2 only), input_size, backend, device, precision. config: the pipeline configuration a bundle
    was exported with (None for checkpoints); a caller combines it with its run options via
    ``samsem.runtime.bundle.manifest.merge_run_options``.
    """

    model1: Segmenter
    model2: Segmenter
    description: dict[str, Any]
    config: PipelineConfig | None = None


def _is_config(text: str) -> bool:
    """True when ``text`` (the part before a ':') names a SAM2 config: official name or YAML path."""
    from samsem.runtime.models.sam2 import config_path

    if text.endswith((".yaml", ".yml")):
        return True
    try:
        config_path(text)
    except ConfigError:
        return False
    return True


def _parse_source(text: str) -> ModelSource:
    text = text.strip()
    if not text:
        raise InputError(None, "empty model argument", "PATH, CONFIG:PATH or SRC1,SRC2")
    config, sep, rest = text.partition(":")
    source = ModelSource(Path(rest), config) if sep and _is_config(config) else ModelSource(Path(text))
    if source.path.is_dir():
        if source.config is not None:
            raise InputError(source.path, "is a bundle directory; bundles carry their config", "BUNDLE_DIR")
        return source
    if not source.path.is_file():
        raise InputError(source.path, "model file not found")
    return source


def resolve_model_arg(model: str | Path | None) -> tuple[ModelSource, ...] | None:
    """Parse a ``--model`` value into one or two sources; None for None ("no model").

    Raises InputError for a missing file, more than two sources or an empty part.
    """
    if model is None:
        return None
    if isinstance(model, Path):
        return (_parse_source(str(model)),)
    parts = model.split(",")
    if len(parts) > 2:
        raise InputError(
            None, f"{len(parts)} models given in {model!r}", "one model, or two for the two scales"
        )
    return tuple(_parse_source(p) for p in parts)


def _segmenter(source: ModelSource, device: str, precision: str) -> tuple[Segmenter, str, dict[str, Any]]:
    """(segmenter, family, info) of one checkpoint; the file is read once and its family picks the model."""
    from samsem.runtime.backends.pytorch import TorchBackend
    from samsem.runtime.models.checkpoint import read_checkpoint
    from samsem.runtime.models.sam2 import SAM2ImageModel, SAM2Segmenter, SAM2Spec, load_sam2

    if source.config is None:
        ckpt = read_checkpoint(source.path, "a samsem checkpoint (SAM2 or lite), or CONFIG:PATH for SAM2")
        if ckpt.family == "lite":
            from samsem.runtime.models.lite import LiteSegmenter, load_lite

            lite, lspec = load_lite(ckpt, device=device)
            backend = TorchBackend(lite, device=device, precision=precision)
            info = {"source": str(source.path), "input_size": lspec.input_size}
            return LiteSegmenter(backend, lspec.input_size), "lite", info
        sam, spec = load_sam2(ckpt, device=device)
    else:
        sam, spec = load_sam2(source.path, SAM2Spec(config=source.config), device=device)
    backend = TorchBackend(SAM2ImageModel(sam), device=device, precision=precision)
    info = {"source": str(source.path), "config": spec.config, "input_size": spec.image_size}
    return SAM2Segmenter(backend, spec.image_size), "sam2", info


def load_models(
    model: str | Path | None, *, backend: str = "auto", device: str = "cpu", precision: str = "fp32"
) -> LoadedModels | None:
    """Load the segmenters named by ``model`` (see the module docstring); None for None.

    backend: checkpoints run on "torch" ("auto" picks it); a bundle on any of BACKENDS ("auto" picks
    the fastest usable one); device: "cpu", "cuda", "cuda:N"; precision: "fp32", "bf16" or "fp16" for
    the torch backend (see samsem.runtime.backends.pytorch; engines run at their export precision).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    sources = resolve_model_arg(model)
    if sources is None:
        return None
    if any(s.path.is_dir() for s in sources):
        return _load_bundle(sources, backend, device, precision)
    if backend not in ("auto", "torch"):
        raise ConfigError(f"backend {backend} needs a model bundle (samsem export); checkpoints run on torch")
    loaded = [_segmenter(s, device, precision) for s in sources]
    first, family1, info1 = loaded[0]
    second, family2, info2 = loaded[-1]
    description: dict[str, Any] = {
        "family": family1 if family1 == family2 else [family1, family2],
        "backend": "torch",
        "device": device,
        "precision": precision,
    }
    if len(loaded) == 1:
        description |= info1
    else:  # a key one family lacks (a lite model has no SAM2 config) is None for it
        description |= {k: [info1.get(k), info2.get(k)] for k in dict.fromkeys([*info1, *info2])}
    return LoadedModels(first, second, description)


def _load_bundle(sources: tuple[ModelSource, ...], backend: str, device: str, precision: str) -> LoadedModels:
    from samsem.runtime.bundle.manifest import load_bundle

    if len(sources) != 1:
        raise InputError(sources[0].path, "a bundle cannot be paired with another model", "one BUNDLE_DIR")
    segs, description, bundle = load_bundle(
        sources[0].path, backend=backend, device=device, precision=precision
    )
    first = next(seg for seg, scales in segs if 1 in scales)
    second = next(seg for seg, scales in segs if 2 in scales)
    return LoadedModels(first, second, description, bundle.config)
