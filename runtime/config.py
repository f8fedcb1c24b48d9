"""The pipeline's configuration: one frozen dataclass composed of the stages' own configs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from samsem.errors import ConfigError
from samsem.runtime.stages.classical import ClassicalConfig
from samsem.runtime.stages.decision import DecisionConfig
from samsem.runtime.stages.prompts import PromptConfig
from samsem.runtime.stages.tiling import TilingConfig


@dataclass(frozen=True)
class PipelineConfig:
    """Everything that shapes the multi-scale pipeline's output besides the model weights.

    ``single_scale`` = 1 or 2 runs only that model (no decision); None runs both scales. ``threshold``
    turns probabilities into masks. ``seed`` makes point prompts reproducible. ``low_pct``/``high_pct``
    are the intensity percentiles mapped to 0 and 1.
    """

    tiling: TilingConfig = field(default_factory=TilingConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    fallback: ClassicalConfig = field(default_factory=ClassicalConfig)
    batch_size: int = 8
    single_scale: int | None = None
    threshold: float = 0.5
    seed: int = 0
    low_pct: float = 0.5
    high_pct: float = 99.5

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.single_scale not in (None, 1, 2):
            raise ConfigError(f"single_scale must be 1, 2 or None, got {self.single_scale}")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"threshold must lie in (0, 1), got {self.threshold}")
        if not 0.0 <= self.low_pct < self.high_pct <= 100.0:
            raise ConfigError(f"need 0 <= low_pct < high_pct <= 100, got {self.low_pct}, {self.high_pct}")

    def to_dict(self) -> dict:
        """Plain nested dict (for reports and bundle manifests)."""
        return asdict(self)
