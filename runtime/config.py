"""The pipeline's configuration and the options of one run.

* :class:`PipelineConfig` is everything that shapes the output besides the weights, composed of the
  stages' own configs. It belongs to the model: a bundle stores the one it was exported with.
* :class:`RunOptions` is what the caller of a run chooses (``samsem segment`` flags, a gRPC request,
  the cluster runner). :meth:`PipelineConfig.with_options` is the one place that decides what a caller
  may override; :func:`parse_request_options` reads the subset a remote request may set from strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from samsem.errors import ConfigError, InputError
from samsem.runtime.stages.classical import ClassicalConfig
from samsem.runtime.stages.decision import FALLBACKS, RULES, DecisionConfig
from samsem.runtime.stages.postprocess import PostprocessConfig
from samsem.runtime.stages.prompts import PromptConfig
from samsem.runtime.stages.tiling import TilingConfig

METALS = ("bright", "dark")  # which end of the intensities the metal is


MAX_FLATTEN = 1 << 20  # px; any window wider than the image acts as the image (see estimate_background)
MAX_SEED = (1 << 64) - 1


def _check_flatten(window: object) -> None:
    if isinstance(window, bool) or not isinstance(window, int) or not 0 <= window <= MAX_FLATTEN:
        raise ConfigError(
            f"flatten must be an integer in [0, {MAX_FLATTEN}] (window in px, 0: off), got {window!r}"
        )


def _check_seed(seed: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed must be an integer in [0, 2**64 - 1], got {seed!r}")


@dataclass(frozen=True)
class RunOptions:
    """Choices of one run, applied over the model's configuration.

    batch_size: model inputs per batch (None: chosen from free GPU memory on CUDA by
    :func:`~samsem.runtime.load.load_pipeline`, the model configuration's otherwise); single_scale: 1 or
    2 runs only that model (no decision), None
    both; seed: seed of the point prompts; fallback: what fills patches where both models are speckled
    ("sauvola", "model1" or "model2"); decision: the per-patch rule ("robust" or the SAMSEM paper's
    "paper", see :mod:`samsem.runtime.stages.decision`); metal: "bright" (metal brighter than the
    background, as in secondary-electron images) or "dark" (inverted, as in some backscatter images);
    flatten: background-flattening window in px (0: off, the SAMSEM paper's behaviour; None: the
    model's, see :class:`PipelineConfig`); min_contrast: faint small components below this contrast
    are removed (0: off, the paper's behaviour; None: the model's ``postprocess.min_contrast``).
    """

    batch_size: int | None = 8
    single_scale: int | None = None
    seed: int = 0
    fallback: str = "model2"
    decision: str = "robust"
    metal: str = "bright"
    flatten: int | None = None
    min_contrast: float | None = None

    def __post_init__(self) -> None:
        _check_seed(self.seed)
        if self.flatten is not None:
            _check_flatten(self.flatten)
        if self.min_contrast is not None and not 0 <= self.min_contrast <= 1:
            raise ConfigError(f"min_contrast must lie in [0, 1] (0: off), got {self.min_contrast!r}")
        if self.batch_size is not None and (
            isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1
        ):
            raise ConfigError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if self.single_scale not in (None, 1, 2):
            raise ConfigError(f"single_scale must be 1, 2 or None, got {self.single_scale!r}")
        if self.fallback not in FALLBACKS:
            raise ConfigError(f"fallback must be one of {', '.join(FALLBACKS)}, got {self.fallback!r}")
        if self.decision not in RULES:
            raise ConfigError(f"decision must be one of {', '.join(RULES)}, got {self.decision!r}")
        if self.metal not in METALS:
            raise ConfigError(f"metal must be one of {', '.join(METALS)}, got {self.metal!r}")


@dataclass(frozen=True)
class PipelineConfig:
    """Everything that shapes the multi-scale pipeline's output besides the model weights.

    ``single_scale`` = 1 or 2 runs only that model (no decision); None runs both scales. ``threshold``
    turns probabilities into masks. ``seed`` makes point prompts reproducible. ``low_pct``/``high_pct``
    are the intensity percentiles mapped to 0 and 1; ``clip_glare`` lowers the high level below a glare
    tail of bright vias (:mod:`samsem.runtime.stages.preprocess`; False: the plain percentiles, as
    before); ``metal`` = "dark" inverts the intensities first; ``flatten`` > 0 subtracts a
    low-frequency background estimated with a window of that many px before anything else (0: off, as in
    the SAMSEM paper; :func:`~samsem.runtime.stages.preprocess.estimate_background`). ``batch_size``,
    ``single_scale``, ``seed``, ``metal``, ``flatten``, ``decision.fallback``, ``decision.rule`` and
    ``postprocess.min_contrast`` are the run's (:class:`RunOptions`); the rest is the model's.
    """

    tiling: TilingConfig = field(default_factory=TilingConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    fallback: ClassicalConfig = field(default_factory=ClassicalConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    batch_size: int = 8
    single_scale: int | None = None
    threshold: float = 0.5
    seed: int = 0
    low_pct: float = 0.5
    high_pct: float = 99.5
    clip_glare: bool = True
    metal: str = "bright"
    flatten: int = 128

    def __post_init__(self) -> None:
        _check_flatten(self.flatten)
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.single_scale not in (None, 1, 2):
            raise ConfigError(f"single_scale must be 1, 2 or None, got {self.single_scale}")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"threshold must lie in (0, 1), got {self.threshold}")
        if not 0.0 <= self.low_pct < self.high_pct <= 100.0:
            raise ConfigError(f"need 0 <= low_pct < high_pct <= 100, got {self.low_pct}, {self.high_pct}")
        if self.metal not in METALS:
            raise ConfigError(f"metal must be one of {', '.join(METALS)}, got {self.metal!r}")

    @property
    def options(self) -> RunOptions:
        """The run options this configuration holds."""
        return RunOptions(
            self.batch_size,
            self.single_scale,
            self.seed,
            self.decision.fallback,
            self.decision.rule,
            self.metal,
            self.flatten,
            self.postprocess.min_contrast,
        )

    def with_options(self, options: RunOptions) -> PipelineConfig:
        """This (the model's) configuration with a run's options applied: the one place that decides
        what a caller may override."""
        return replace(
            self,
            batch_size=self.batch_size if options.batch_size is None else options.batch_size,
            single_scale=options.single_scale,
            seed=options.seed,
            metal=options.metal,
            flatten=self.flatten if options.flatten is None else options.flatten,
            postprocess=self.postprocess
            if options.min_contrast is None
            else replace(self.postprocess, min_contrast=options.min_contrast),
            decision=replace(self.decision, fallback=options.fallback, rule=options.decision),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (for reports and bundle manifests)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PipelineConfig:
        """Inverse of :meth:`to_dict`; ConfigError for unknown or invalid fields."""
        nested: dict[str, type] = {
            "tiling": TilingConfig,
            "prompts": PromptConfig,
            "decision": DecisionConfig,
            "fallback": ClassicalConfig,
            "postprocess": PostprocessConfig,
        }
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"invalid pipeline configuration: unknown field(s) {', '.join(unknown)}")
        try:
            values = {k: nested[k](**v) if k in nested else v for k, v in data.items()}
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"invalid pipeline configuration: {exc}") from exc


# what a remote request may set (the server keeps its own batch size): option key -> parser
REQUEST_OPTIONS: dict[str, tuple[str, Any]] = {
    "single_scale": ("'1', '2' or 'both'", {"1": 1, "2": 2, "both": None}.__getitem__),
    "seed": ("an integer in [0, 2**64 - 1]", int),
    "fallback": (" or ".join(repr(f) for f in FALLBACKS), str),
    "decision": (" or ".join(repr(r) for r in RULES), str),
    "metal": (" or ".join(repr(m) for m in METALS), str),
    "flatten": (f"an integer in [0, {MAX_FLATTEN}] (window in px, 0: off)", int),
    "min_contrast": ("a number in [0, 1] (0: off)", float),
}


def parse_request_options(base: RunOptions, values: Mapping[str, str]) -> RunOptions:
    """``base`` with a request's string options applied (keys of :data:`REQUEST_OPTIONS`).

    Unknown keys and bad values raise InputError naming the key and what it takes.
    """
    unknown = sorted(set(values) - set(REQUEST_OPTIONS))
    if unknown:
        raise InputError(
            None, f"unknown option(s) {', '.join(map(repr, unknown))}", f"keys {', '.join(REQUEST_OPTIONS)}"
        )
    changes: dict[str, Any] = {}
    for key, text in values.items():
        expected, parse = REQUEST_OPTIONS[key]
        try:
            changes[key] = parse(text)
            replace(base, **{key: changes[key]})
        except (KeyError, ValueError, ConfigError):
            raise InputError(None, f"bad value {text!r} for option {key!r}", expected) from None
    return replace(base, **changes)
