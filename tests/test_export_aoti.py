"""AOTInductor packages: compile the tiny SAM2 (minutes on a CPU: marked slow) and compare with PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from samsem.export.bundle_writer import ExportOptions, write_bundle
from samsem.runtime.load import load_models
from samsem.runtime.models import sam2 as sm
from samsem.runtime.models.registry import save_model

S = 64


def _bundle(folder: Path, device: str, fp16: bool) -> Path:
    spec = sm.tiny_spec(S)
    ckpt = folder / "tiny.pt"
    save_model(ckpt, sm.build(spec, seed=0), spec)
    out = folder / "bundle"
    options = ExportOptions(
        formats=("aoti", "torch"), aoti_device=device, fp16=fp16, batch_max=8, points_max=6
    )
    write_bundle(out, [ckpt], options=options)
    return out


def _compare(bundle: Path, device: str, atol: float) -> None:
    aoti = load_models(str(bundle), backend="aoti", device=device)
    ref = load_models(str(bundle), backend="torch", device=device)
    rng = np.random.default_rng(0)
    for batch, points in ((1, 1), (5, 6)):
        inputs = {
            "image": rng.normal(size=(batch, 3, S, S)).astype(np.float32),
            "point_coords": (rng.random((batch, points, 2)) * S).astype(np.float32),
            "point_labels": np.ones((batch, points), np.float32),
        }
        got, want = aoti.model1.backend.run(inputs), ref.model1.backend.run(inputs)
        for name in ("masks", "iou_scores"):
            np.testing.assert_allclose(
                got[name], want[name], rtol=0, atol=atol * max(1, np.abs(want[name]).max())
            )


@pytest.mark.slow
def test_aoti_cpu_package_matches_torch(tmp_path) -> None:
    bundle = _bundle(tmp_path, "cpu", fp16=False)
    _compare(bundle, "cpu", 1e-4)
    auto = load_models(str(bundle), backend="auto", device="cpu")
    assert auto.info.to_json()["backend"] == "torch"  # auto uses AOTInductor on CUDA only
    assert "aoti skipped (auto uses it on CUDA only)" in auto.info.to_json()["backend_choice"]


@pytest.mark.slow
@pytest.mark.gpu
def test_aoti_cuda_fp16_package_matches_torch(tmp_path) -> None:
    bundle = _bundle(tmp_path, "cuda", fp16=True)
    _compare(bundle, "cuda", 5e-2)
    assert load_models(str(bundle), backend="auto", device="cuda").info.to_json()["backend"] == "aoti"
