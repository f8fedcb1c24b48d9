"""samsem: multi-scale SAM2 segmentation of metal lines in SEM images of delayered ICs.

The Python API in one import::

    import samsem

    pipeline = samsem.load_pipeline()                      # the bundled default model
    result = pipeline.segment(image)                       # (H, W) uint8/uint16 -> SegmentResult
    result.mask, result.report.to_json()

``load_pipeline(model=None | path | "classical", backend="auto", device="cpu", options=RunOptions(...))``
is the one loading entry point (see :mod:`samsem.runtime.load`). The names below are imported on first
use, so ``import samsem`` stays light.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

# PyTorch and Numba each keep an OpenMP thread team; with the default active wait policy the idle team
# spins while the other works, which on a 2-core machine made the pipeline 5-10x slower. Passive
# waiting fixes it; it must be set before either runtime starts (an explicit user setting wins).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    __version__ = version("samsem")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

if TYPE_CHECKING:  # the lazily imported names below, for type checkers and editors
    from samsem.errors import ConfigError as ConfigError
    from samsem.errors import EngineError as EngineError
    from samsem.errors import InputError as InputError
    from samsem.errors import SamsemError as SamsemError
    from samsem.runtime.config import PipelineConfig as PipelineConfig
    from samsem.runtime.config import RunOptions as RunOptions
    from samsem.runtime.load import load_pipeline as load_pipeline
    from samsem.runtime.pipeline import FailedImage as FailedImage
    from samsem.runtime.pipeline import Pipeline as Pipeline
    from samsem.runtime.pipeline import SegmentResult as SegmentResult
    from samsem.runtime.report import ImageReport as ImageReport
    from samsem.runtime.report import ModelInfo as ModelInfo
    from samsem.runtime.report import PatchRecord as PatchRecord

_PUBLIC = {
    "load_pipeline": "samsem.runtime.load",
    "Pipeline": "samsem.runtime.pipeline",
    "SegmentResult": "samsem.runtime.pipeline",
    "FailedImage": "samsem.runtime.pipeline",
    "PipelineConfig": "samsem.runtime.config",
    "RunOptions": "samsem.runtime.config",
    "ModelInfo": "samsem.runtime.report",
    "ImageReport": "samsem.runtime.report",
    "PatchRecord": "samsem.runtime.report",
    "SamsemError": "samsem.errors",
    "InputError": "samsem.errors",
    "ConfigError": "samsem.errors",
    "EngineError": "samsem.errors",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'samsem' has no attribute {name!r}")
