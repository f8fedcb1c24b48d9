"""Shared fixtures and marker handling: `gpu`, `trt` and `slow` tests are skipped with a reason."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
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


@pytest.fixture(scope="session")
def lines_dataset(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory of a one-IC training folder (images/, masks/) of straight metal lines on noise.

    ``make(count, size, seed=0, vertical=False, prefix="im")``: ``count`` images of ``size`` px with
    lines every ``size // 5`` px, ``size // 14`` px wide, jittered by the seed.
    """
    from samsem.io import write_image, write_mask

    def make(count: int, size: int, seed: int = 0, vertical: bool = False, prefix: str = "im") -> Path:
        root = tmp_path_factory.mktemp("lines")
        rng = np.random.default_rng(seed)
        pitch, width, margin = size // 5, max(size // 14, 2), size // 16
        for k in range(count):
            mask = np.zeros((size, size), np.uint8)
            for pos in range(margin, size - margin - width, pitch):
                p = pos + int(rng.integers(0, 5))
                mask[p : p + width, margin : size - margin] = 1
            if vertical:
                mask = np.ascontiguousarray(mask.T)
            image = (mask * 140 + 50 + rng.normal(0, 10, mask.shape)).clip(0, 255).astype(np.uint8)
            write_image(root / "images" / f"{prefix}{k}.png", image)
            write_mask(root / "masks" / f"{prefix}{k}.png", mask)
        return root

    return make


@pytest.fixture(scope="session")
def tiny_sam2_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory of samsem checkpoints of a tiny random SAM2: ``make(image_size=128, seed=0) -> path``."""
    from samsem.runtime.models import sam2 as sm
    from samsem.runtime.models.registry import save_model

    def make(image_size: int = 128, seed: int = 0) -> Path:
        spec = sm.tiny_spec(image_size)
        path = tmp_path_factory.mktemp("tiny_sam2") / f"tiny{image_size}_seed{seed}.pt"
        save_model(path, sm.build(spec, seed=seed), spec)
        return path

    return make
