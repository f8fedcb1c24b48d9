"""Shared fixtures and marker handling: `gpu`, `trt` and `slow` tests are skipped with a reason."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skips = {
        "gpu": (not _has_cuda(), "needs a CUDA GPU"),
        "trt": (importlib.util.find_spec("tensorrt") is None, "needs TensorRT (pip install samsem[trt])"),
        "slow": (os.environ.get("SAMSEM_SLOW") != "1", "slow test; set SAMSEM_SLOW=1 to run"),
    }
    for item in items:
        for marker, (skip, reason) in skips.items():
            if skip and marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def shared_layouts() -> list[Path]:
    """The real IC layout SVGs in ../shared/data (skips the test when absent)."""
    folder = SHARED_DATA / "hy5syn-layouts"
    files = sorted(folder.glob("*.svg")) if folder.is_dir() else []
    if not files:
        pytest.skip("../shared/data/hy5syn-layouts is absent")
    return files


@pytest.fixture
def device() -> str:
    """Torch device for model tests, chosen by SAMSEM_TEST_DEVICE (default cpu)."""
    return os.environ.get("SAMSEM_TEST_DEVICE", "cpu")
