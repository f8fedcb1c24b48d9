"""The one way from a user's model argument to a ready :class:`~samsem.runtime.pipeline.Pipeline`.

:func:`load_pipeline` is used by ``samsem segment``, ``samsem evaluate``, the server and the cluster
runner. Accepted ``model`` values (one source serves both scales; two comma-separated sources give
scale 1 and scale 2):

* None — the model bundle shipped in the package (the classical Sauvola segmenter if there is none);
* ``"classical"``, ``"classical:sauvola"``, ``"classical:otsu"`` — the classical segmenters;
* ``PATH`` — a samsem checkpoint (.pt; it names its model family and stores its spec);
* ``CONFIG:PATH`` — official weights with the config that names their model (for families that have
  such files, e.g. ``sam2.1_hiera_t:/ckpt/sam2.1_hiera_tiny.pt``);
* ``SRC1,SRC2`` — two of the above, for the whole-image and the patch scale;
* ``BUNDLE_DIR`` — a model bundle written by ``samsem export``, run on any registered backend.

A bundle carries the pipeline configuration it was exported with; checkpoints use ``config`` (default
:class:`~samsem.runtime.config.PipelineConfig`). Either way the caller's :class:`RunOptions` apply on
top. :class:`ModelInfo` says what makes the masks; every report records it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from samsem.errors import ConfigError, InputError
from samsem.runtime.config import PipelineConfig, RunOptions
from samsem.runtime.models.registry import family_names, get_family
from samsem.runtime.models.segmenter import Segmenter
from samsem.runtime.pipeline import Pipeline
from samsem.runtime.report import ModelCard, ModelInfo
from samsem.runtime.stages.classical import ClassicalConfig

# the classical segmenters by model name (classical:median-otsu is a 5x5 median filter + Otsu threshold)
CLASSICAL_MODELS = {
    "classical": ClassicalConfig(method="sauvola"),
    "classical:sauvola": ClassicalConfig(method="sauvola"),
    "classical:otsu": ClassicalConfig(method="otsu"),
    "classical:median-otsu": ClassicalConfig(method="otsu", median_ksize=5, blur_sigma=0.0),
}


@dataclass(frozen=True)
class LoadedModels:
    """Segmenters for scale 1 (whole image) and scale 2 (patches), what they are, and the pipeline
    configuration a bundle was exported with (None for checkpoints). model2 is model1 when one set of
    weights serves both scales."""

    model1: Segmenter
    model2: Segmenter
    info: ModelInfo
    config: PipelineConfig | None = None


@dataclass(frozen=True)
class ModelSource:
    """One weights file or bundle directory and, for official weights, the config naming their model."""

    path: Path
    config: str | None = None

    def __str__(self) -> str:
        return f"{self.config}:{self.path}" if self.config else str(self.path)


def _named_spec(config: str) -> Any:
    """The spec a config name gives in some family that reads official weights; None if none does."""
    for name in family_names():
        parse = get_family(name).named_spec
        if parse is None:
            continue
        try:
            return parse(config, None)
        except ConfigError:
            continue
    return None


def _parse_source(text: str) -> ModelSource:
    text = text.strip()
    if not text:
        raise InputError(None, "empty model argument", "PATH, CONFIG:PATH or SRC1,SRC2")
    config, sep, rest = text.partition(":")
    named = sep and _named_spec(config) is not None
    source = ModelSource(Path(rest), config) if named else ModelSource(Path(text))
    if source.path.is_dir():
        if source.config is not None:
            raise InputError(source.path, "is a bundle directory; bundles carry their config", "BUNDLE_DIR")
        return source
    if not source.path.is_file():
        raise InputError(source.path, "model file not found")
    return source


def resolve_model_arg(model: str | Path) -> tuple[ModelSource, ...]:
    """Parse a model argument (not None or classical) into one or two sources.

    Raises InputError for a missing file, more than two sources or an empty part.
    """
    if isinstance(model, Path):
        return (_parse_source(str(model)),)
    parts = model.split(",")
    if len(parts) > 2:
        raise InputError(
            None, f"{len(parts)} models given in {model!r}", "one model, or two for the two scales"
        )
    return tuple(_parse_source(p) for p in parts)


def _checkpoint(
    source: ModelSource, device: str, precision: str, backend_name: str = "torch"
) -> tuple[Segmenter, ModelCard]:
    """A checkpoint's segmenter on a torch backend (eager, compiled, CUDA graphs) and its card; the file
    is read once."""
    from samsem.runtime.backends.base import get_backend
    from samsem.runtime.models.registry import load_model

    spec = None if source.config is None else _named_spec(source.config)
    loaded = load_model(source.path, spec, device=device)
    size = loaded.family.input_size(loaded.spec)
    wrap = get_backend(backend_name).wrap
    assert wrap is not None
    backend = wrap(loaded.module, device, precision)
    card = ModelCard(loaded.family.name, str(source.path), size, loaded.family.spec_name(loaded.spec))
    return loaded.family.segmenter(backend, size), card


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when torch sees a CUDA GPU here, else ``"cpu"``; any other name as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_models(
    model: str | Path, *, backend: str = "auto", device: str = "cpu", precision: str = "fp32"
) -> LoadedModels:
    """Load the segmenters a model argument names (checkpoints, two checkpoints or a bundle).

    backend: checkpoints run on "torch" ("auto" picks it); a bundle on any registered backend ("auto"
    picks the fastest usable one); device: "cpu", "cuda", "cuda:N" or "auto" (:func:`resolve_device`);
    precision: "fp32", "bf16" or
    "fp16" for the torch backend (engines run at their export precision).
    """
    from samsem.runtime.backends.base import get_backend

    device = resolve_device(device)
    if backend != "auto":
        get_backend(backend)  # ConfigError listing the valid names
    sources = resolve_model_arg(model)
    if any(s.path.is_dir() for s in sources):
        if len(sources) != 1:
            raise InputError(
                sources[0].path, "a bundle cannot be paired with another model", "one BUNDLE_DIR"
            )
        return _load_bundle(sources[0].path, backend, device, precision)
    name = "torch" if backend == "auto" else backend
    if get_backend(name).wrap is None:
        raise ConfigError(
            f"backend {backend} needs a model bundle (samsem export); checkpoints run on the torch backends"
        )
    loaded = [_checkpoint(s, device, precision, name) for s in sources]
    info = ModelInfo(
        "checkpoint", tuple(card for _, card in loaded), backend=name, device=device, precision=precision
    )
    return LoadedModels(loaded[0][0], loaded[-1][0], info)


def _load_bundle(path: Path, backend: str, device: str, precision: str) -> LoadedModels:
    from samsem.runtime.bundle.open import bundle_segmenters

    segs = bundle_segmenters(path, backend=backend, device=device, precision=precision)
    manifest = segs.bundle.manifest
    family = segs.bundle.family
    cards = tuple(
        ModelCard(
            family.name,
            str(path),
            m.input_size,
            family.spec_name(family.spec_from_dict(m.spec)),
            m.source.get("sha256"),
        )
        for m in manifest.models
    )
    info = ModelInfo(
        "bundle",
        cards,
        source=str(path),
        backend=segs.backend,
        backend_choice=segs.backend_choice,
        device=device,
        precision=segs.precision,
        bundle_format_version=manifest.format_version,
    )
    return LoadedModels(segs.for_scale(1), segs.for_scale(2), info, segs.bundle.config)


def default_bundle() -> Path | None:
    """The model bundle shipped in the package (samsem/data/default), or None if it is absent."""
    path = Path(str(resources.files("samsem") / "data" / "default"))
    return path if (path / "manifest.json").is_file() else None


def classical_pipeline(
    name: str = "classical", *, options: RunOptions | None = None, config: PipelineConfig | None = None
) -> Pipeline:
    """The classical segmenter ``name`` (a key of :data:`CLASSICAL_MODELS`) on patches at their native
    size (scale 2 only, whatever ``options`` say)."""
    from samsem.runtime.stages.classical import ClassicalSegmenter

    if name not in CLASSICAL_MODELS:
        raise ConfigError(
            f"unknown classical segmenter {name!r}; expected one of {', '.join(CLASSICAL_MODELS)}"
        )
    cfg = (config or PipelineConfig()).with_options(replace(options or RunOptions(), single_scale=2))
    seg = ClassicalSegmenter(CLASSICAL_MODELS[name], input_size=cfg.tiling.patch_size)
    method = name.partition(":")[2] or CLASSICAL_MODELS[name].method
    return Pipeline(None, seg, cfg, ModelInfo("classical", method=method))


def load_pipeline(
    model: str | Path | None = None,
    *,
    backend: str = "auto",
    device: str = "cpu",
    precision: str = "fp32",
    options: RunOptions | None = None,
    config: PipelineConfig | None = None,
) -> Pipeline:
    """The pipeline for a model argument (see the module docstring) with the caller's run options.

    config: the model's pipeline configuration for checkpoints and the classical segmenters (a bundle
    carries its own; giving one for a bundle is a ConfigError). options: batch size, scales, seed and
    fallback (default RunOptions()); a batch size of None is chosen from the free GPU memory on CUDA
    (:mod:`samsem.runtime.backends.memory`), the model configuration's elsewhere.
    """
    options = options or RunOptions()
    device = resolve_device(device)
    if model is None:
        model = default_bundle() or "classical"
    if str(model) in CLASSICAL_MODELS:
        return classical_pipeline(str(model), options=options, config=config)
    loaded = load_models(model, backend=backend, device=device, precision=precision)
    if loaded.config is not None and config is not None:
        raise ConfigError("a model bundle carries its own pipeline configuration; pass only run options")
    base = loaded.config or config or PipelineConfig()
    if options.batch_size is None and device.startswith("cuda"):  # from free GPU memory
        from samsem.runtime.backends.memory import auto_batch_size

        options = replace(options, batch_size=auto_batch_size(loaded.model2, device))
    return Pipeline(loaded.model1, loaded.model2, base.with_options(options), loaded.info)
