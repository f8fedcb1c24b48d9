"""Typed report records: what made the masks (:class:`ModelInfo`), each patch's decision
(:class:`PatchRecord`) and each image's report (:class:`ImageReport`), each with ``to_json``.

``ImageReport.to_json`` is the ``NAME.report.json`` that ``samsem segment`` writes (before the caller
adds its own keys such as the input path) and the report the server returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelCard:
    """One model of a pipeline: family, where its weights came from, input size, the config name of
    official weights (None otherwise) and, in a bundle, the sha256 of the checkpoint it was exported from."""

    family: str
    source: str
    input_size: int
    config: str | None = None
    checkpoint_sha256: str | None = None


@dataclass(frozen=True)
class ModelInfo:
    """What makes the masks.

    kind: "bundle", "checkpoint" or "classical"; source: the bundle directory (bundles); models: one
    card per model (one serving both scales, or scale 1 and scale 2; none for classical); backend,
    backend_choice, device, precision: how they run (None for classical); bundle_format_version;
    method: the classical method.
    """

    kind: str
    models: tuple[ModelCard, ...] = ()
    source: str | None = None
    backend: str | None = None
    backend_choice: str | None = None
    device: str | None = None
    precision: str | None = None
    bundle_format_version: int | None = None
    method: str | None = None

    @property
    def family(self) -> str:
        """The family of every model ("lite", "sam2", "classical"; "lite+sam2" when they differ)."""
        if self.kind == "classical":
            return "classical"
        return "+".join(dict.fromkeys(m.family for m in self.models))

    def summary(self) -> str:
        """One line for the command line, e.g. "model lite on backend onnxruntime, device cpu"."""
        if self.kind == "classical":
            return f"classical {self.method} segmenter"
        return f"model {self.family} on backend {self.backend}, device {self.device}"

    def precision_note(self, requested: str) -> str | None:
        """Why ``requested`` (--precision) is not what runs, or None when it is: engines run at their
        export precision, and the classical segmenters have no precision to choose."""
        if self.kind == "classical" and requested != "fp32":
            return f"--precision {requested} does not apply to the {self.summary()}"
        if self.precision in (None, requested):
            return None
        where = f"{self.backend}/{self.device}"
        return f"--precision {requested} is not available on {where}; running {self.precision}"

    def to_json(self) -> dict[str, Any]:
        """The report's "model" record. Per-model values are one value for one model, else a list."""
        if self.kind == "classical":
            return {"family": "classical", "method": self.method}
        families = [m.family for m in self.models]
        out: dict[str, Any] = {"family": families[0] if len(set(families)) == 1 else families}
        out["backend"] = self.backend
        if self.backend_choice is not None:
            out["backend_choice"] = self.backend_choice
        out |= {"device": self.device, "precision": self.precision}
        configs = _per_model([m.config for m in self.models])
        if self.kind == "bundle":
            out |= {
                "source": self.source,
                "bundle_format_version": self.bundle_format_version,
                "input_size": _per_model([m.input_size for m in self.models]),
                "checkpoint_sha256": [m.checkpoint_sha256 for m in self.models],
            }
            if any(m.config for m in self.models):
                out["config"] = configs
            return out
        out["source"] = _per_model([m.source for m in self.models])
        if any(m.config for m in self.models):
            out["config"] = configs
        out["input_size"] = _per_model([m.input_size for m in self.models])
        return out


def _per_model(values: list[Any]) -> Any:
    return values[0] if len(values) == 1 else values


@dataclass(frozen=True)
class PatchRecord:
    """One patch: index, box [y0, x0, y1, x1], source ("model1", "model2", "fallback"), the decision
    branch (None when a single scale ran), both masks' speckle counts, their agreement, the kept mask's
    score and whether the patch is flagged for manual inspection."""

    index: int
    box: tuple[int, int, int, int]
    source: str
    reason: str | None = None
    speckles1: int | None = None
    speckles2: int | None = None
    agreement: float | None = None
    score: float | None = None
    flagged: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "box": list(self.box),
            "source": self.source,
            "reason": self.reason,
            "speckles1": self.speckles1,
            "speckles2": self.speckles2,
            "agreement": self.agreement,
            "score": self.score,
            "flagged": self.flagged,
        }


@dataclass(frozen=True)
class ImageReport:
    """One image's report: size, dtype, the intensity levels mapped to 0 and 1 (background, metal), the
    model, the pipeline configuration (a JSON-ready dict), the background window the image used
    (``flatten_px``: ``config["flatten"]`` cut to what the image can use, 0: off), the mode, model 1's
    score, the patches and their sources, the flagged patches, the mask's foreground fraction and the
    seconds spent per stage on this image
    (``timings_s``: reading, preparing and stitching are measured per image; a model call or decision
    run on a batch holding several images is split among them by their number of inputs, so the images'
    figures add up to the run's time and never repeat a batch's whole time)."""

    name: str
    height: int
    width: int
    dtype: str
    intensity_levels: tuple[float, float]
    model: ModelInfo | None
    config: dict[str, Any]
    flatten_px: int
    mode: str
    model1_score: float | None
    patches: tuple[PatchRecord, ...]
    foreground_fraction: float
    timings_s: dict[str, float]

    @property
    def flagged(self) -> list[int]:
        """Indices of the patches flagged for manual inspection."""
        return [p.index for p in self.patches if p.flagged]

    def to_json(self) -> dict[str, Any]:
        sources = [p.source for p in self.patches]
        return {
            "name": self.name,
            "height": self.height,
            "width": self.width,
            "dtype": self.dtype,
            "intensity_levels": list(self.intensity_levels),
            "model": {} if self.model is None else self.model.to_json(),
            "config": self.config,
            "flatten_px": self.flatten_px,
            "mode": self.mode,
            "model1_score": self.model1_score,
            "n_patches": len(self.patches),
            "patch_sources": {s: sources.count(s) for s in sorted(set(sources))},
            "flagged": self.flagged,
            "foreground_fraction": self.foreground_fraction,
            "timings_s": {k: round(v, 6) for k, v in self.timings_s.items()},
            "patches": [p.to_json() for p in self.patches],
        }
