"""ONNX Runtime (CPU) vs PyTorch on a tiny random-weight SAM2: logits, then the whole pipeline's masks.

Tolerances: mask logits and IoU scores within LOGIT_ATOL (absolute; the observed difference is ~2e-7,
float32 rounding of differently fused kernels); after the whole pipeline the final masks are equal
pixel for pixel.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from samsem.errors import InputError
from samsem.export.bundle_writer import ExportOptions, write_bundle
from samsem.export.onnx_export import export_onnx
from samsem.runtime.backends.ort import OnnxBackend, providers_for
from samsem.runtime.backends.pytorch import TorchBackend
from samsem.runtime.config import PipelineConfig
from samsem.runtime.load import load_models
from samsem.runtime.models import sam2 as sm
from samsem.runtime.models.registry import build_model, save_model
from samsem.runtime.models.sam2 import SAM2Encoder
from samsem.runtime.models.segmenter import Backend
from samsem.runtime.pipeline import Pipeline
from samsem.synth.generate import generate_sample

S = 64
LOGIT_ATOL = 1e-4


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("onnx")
    spec = sm.tiny_spec(S)
    ckpt = folder / "tiny.pt"
    save_model(ckpt, sm.build(spec, seed=3), spec)
    out = folder / "bundle"
    write_bundle(out, [ckpt], options=ExportOptions(formats=("onnx", "torch")))
    return out


@pytest.fixture(scope="module")
def models(bundle) -> dict:
    return {b: load_models(str(bundle), backend=b) for b in ("onnxruntime", "torch")}


def _inputs(batch: int, points: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.ones((batch, points), np.float32)
    labels[:, -1] = 0 if points > 1 else 1  # a negative point exercises the label embeddings
    return {
        "image": rng.normal(size=(batch, 3, S, S)).astype(np.float32),
        "point_coords": (rng.random((batch, points, 2)) * S).astype(np.float32),
        "point_labels": labels,
    }


@pytest.mark.parametrize(("batch", "points"), [(1, 1), (3, 5), (17, 2)])
def test_logits_match_pytorch(models, batch: int, points: int) -> None:
    ort_backend = models["onnxruntime"].model1.backend
    torch_backend = models["torch"].model1.backend
    assert isinstance(ort_backend, OnnxBackend) and isinstance(ort_backend, Backend)
    assert isinstance(torch_backend, TorchBackend)
    inputs = _inputs(batch, points, seed=batch)
    got, want = ort_backend.run(inputs), torch_backend.run(inputs)
    assert got["masks"].shape == (batch, 3, S // 4, S // 4) and got["iou_scores"].shape == (batch, 3)
    for name in ("masks", "iou_scores"):
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=LOGIT_ATOL)
    assert np.abs(want["masks"]).max() > 100 * LOGIT_ATOL  # the comparison is not between near-zeros


def test_pipeline_masks_equal(models) -> None:
    images = [
        generate_sample("easy", h, w, seed=i).image for i, (h, w) in enumerate([(300, 420), (200, 200)])
    ]
    config = PipelineConfig(batch_size=4)
    results = {}
    for name, loaded in models.items():
        pipe = Pipeline(loaded.model1, loaded.model2, config, loaded.info)
        results[name] = [pipe.segment(img, f"im{i}") for i, img in enumerate(images)]
    for a, b in zip(results["onnxruntime"], results["torch"], strict=True):
        assert 0.0 < b.mask.mean() < 1.0  # a non-trivial mask
        np.testing.assert_array_equal(a.mask, b.mask)
        assert [p["source"] for p in a.report.to_json()["patches"]] == [
            p["source"] for p in b.report.to_json()["patches"]
        ]
        assert a.report.to_json()["model"]["backend"] == "onnxruntime"


def test_graph_for_other_shapes_is_refused(bundle, tmp_path) -> None:
    """An encoder exported at 128 px cannot serve the 64-px io-spec: refused when the session opens."""
    big = sm.tiny_spec(2 * S)
    encoder = SAM2Encoder(sm.SAM2ImageModel(sm.build(big, seed=0)))
    path = tmp_path / "encoder128.onnx"
    export_onnx(encoder, sm.geometry(big).engines()["encoder"], path)
    io = sm.geometry(sm.tiny_spec(S)).engines()
    with pytest.raises(InputError, match=r"encoder128\.onnx: encoder graph was built for other shapes"):
        OnnxBackend(io["model"], [(io["encoder"], path), (io["decoder"], bundle / "model1/decoder.onnx")])


def test_providers() -> None:
    assert providers_for("cpu", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers_for("cuda:0", gpu) == gpu
    assert providers_for("cuda", gpu[1:]) == gpu[1:]
    with pytest.raises(Exception, match="no CUDA provider"):
        providers_for("cuda", ["CPUExecutionProvider"])


def test_lite_bundle_is_one_graph(tmp_path) -> None:
    """The lite family: one "model" graph; ONNX Runtime and the bundle's torch weights agree."""
    from samsem.runtime.models.lite import LiteSpec

    spec = LiteSpec(input_size=S, widths=(8, 16, 16, 32), depths=(1, 1, 1, 1), heads=2, decoder_width=8)
    ckpt = tmp_path / "lite.pt"
    save_model(ckpt, build_model(spec, seed=0), spec)
    manifest = write_bundle(tmp_path / "lite", [ckpt], options=ExportOptions(formats=("onnx", "torch")))
    assert manifest.family == "lite" and manifest.preprocessing["channels"] == "gray (1 channel)"
    assert [(e.format, e.graph) for e in manifest.models[0].engines] == [
        ("torch", "model"),
        ("onnx", "model"),
    ]
    images = np.random.default_rng(0).random((3, S, S)).astype(np.float32)
    ort_seg = load_models(str(tmp_path / "lite"), backend="onnxruntime").model1
    torch_seg = load_models(str(tmp_path / "lite"), backend="torch").model1
    logits = [seg.backend.run({"image": images[:, None]})["logits"] for seg in (ort_seg, torch_seg)]
    np.testing.assert_allclose(logits[0], logits[1], rtol=0, atol=LOGIT_ATOL)
    probs = [seg.predict(images, None)[0] for seg in (ort_seg, torch_seg)]
    np.testing.assert_array_equal(probs[0] >= 0.5, probs[1] >= 0.5)


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2, reason="2 cores"
)
def test_onnxruntime_stays_inside_the_process_cpu_affinity() -> None:
    """A process restricted to one core (taskset, a pinned Ray worker) gets no ONNX Runtime pool thread
    pinned elsewhere (its default pool pins threads to cores of its own choosing)."""
    code = (
        "import os; from pathlib import Path\n"
        "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
        "from samsem.runtime.load import load_pipeline\n"
        "load_pipeline(backend='onnxruntime')\n"
        "cpus = set()\n"
        "for t in Path('/proc/self/task').iterdir():\n"
        "    lines = (t / 'status').read_text().splitlines()\n"
        "    cpus |= {x.split()[1] for x in lines if x.startswith('Cpus_allowed_list')}\n"
        "print(sorted(cpus))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.strip() == f"['{min(os.sched_getaffinity(0))}']"
