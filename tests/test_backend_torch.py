"""TorchBackend, multimask selection and the SAM2 segmenter on a tiny random-weight SAM2."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
import torch

from samsem.errors import ConfigError, EngineError, InputError
from samsem.runtime.backends.pytorch import TorchBackend
from samsem.runtime.models import sam2 as sm
from samsem.runtime.models.sam2 import SAM2Segmenter, normalize
from samsem.runtime.models.segmenter import Backend, Segmenter, sigmoid
from samsem.runtime.stages.multimask import select_best

S = 128


@pytest.fixture(scope="module")
def model() -> sm.SAM2ImageModel:
    return sm.SAM2ImageModel(sm.build(sm.tiny_spec(S), seed=0))


def _inputs(batch: int = 2, points: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "image": rng.normal(size=(batch, 3, S, S)).astype(np.float32),
        "point_coords": (rng.random((batch, points, 2)) * S).astype(np.float32),
        "point_labels": np.ones((batch, points), np.float32),
    }


# ----------------------------------------------------------------------------------------- backend


def test_backend_equals_direct_module_call(model) -> None:
    backend = TorchBackend(model)
    assert isinstance(backend, Backend) and backend.name == "torch"
    inputs = _inputs()
    out = backend.run(inputs)
    with torch.inference_mode():
        masks, iou = model(*(torch.from_numpy(inputs[k]) for k in ("image", "point_coords", "point_labels")))
    assert set(out) == {"masks", "iou_scores"}
    assert out["masks"].dtype == np.float32 and out["masks"].shape == (2, 3, S // 4, S // 4)
    np.testing.assert_array_equal(out["masks"], masks.numpy())
    np.testing.assert_array_equal(out["iou_scores"], iou.numpy())


def test_backend_rejects_bad_inputs(model) -> None:
    backend = TorchBackend(model)
    good = _inputs()
    with pytest.raises(EngineError, match=r"missing \['point_labels'\]"):
        backend.run({k: v for k, v in good.items() if k != "point_labels"})
    with pytest.raises(EngineError, match="'image' has dtype float64"):
        backend.run({**good, "image": good["image"].astype(np.float64)})
    with pytest.raises(EngineError, match=r"'image' has shape \(2, 3, 64, 64\).*batch, 3, 128, 128"):
        backend.run({**good, "image": good["image"][:, :, :64, :64].copy()})
    with pytest.raises(EngineError, match="axis 0 \\(batch\\) is 1 but another tensor has 2"):
        backend.run({**good, "point_coords": good["point_coords"][:1]})
    with pytest.raises(EngineError, match="axis 1 \\(points\\) is 2 but another tensor has 3"):
        backend.run({**good, "point_labels": good["point_labels"][:, :2].copy()})


def test_backend_precision_choices(model) -> None:
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        TorchBackend(model, precision="fp16")
    with pytest.raises(ConfigError, match="unknown precision 'int8'"):
        TorchBackend(model, precision="int8")
    with pytest.raises(ConfigError, match="invalid torch device"):
        TorchBackend(model, device="tpu9")
    inputs = _inputs()
    ref = TorchBackend(model).run(inputs)
    out = TorchBackend(model, precision="bf16").run(inputs)
    assert out["masks"].dtype == np.float32
    assert np.abs(out["masks"] - ref["masks"]).max() < 0.05
    assert np.abs(out["iou_scores"] - ref["iou_scores"]).max() < 0.02


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_backend_on_cuda_matches_cpu(precision: str) -> None:
    inputs = _inputs()
    ref = TorchBackend(sm.SAM2ImageModel(sm.build(sm.tiny_spec(S), seed=0))).run(inputs)
    cuda = sm.SAM2ImageModel(sm.build(sm.tiny_spec(S), seed=0))
    out = TorchBackend(cuda, device="cuda", precision=precision).run(inputs)
    tol = 1e-3 if precision == "fp32" else 0.05
    assert np.abs(out["masks"] - ref["masks"]).max() < tol


# --------------------------------------------------------------------------------------- multimask


def test_select_best_picks_highest_score_first_on_ties() -> None:
    masks = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    scores = np.array([[0.2, 0.9, 0.1], [0.7, 0.3, 0.7]], np.float32)
    best, best_scores = select_best(masks, scores)
    np.testing.assert_array_equal(best[0], masks[0, 1])
    np.testing.assert_array_equal(best[1], masks[1, 0])  # tie between 0 and 2 -> index 0
    np.testing.assert_array_equal(best_scores, scores[[0, 1], [1, 0]])
    assert best.shape == (2, 2, 2) and best.dtype == np.float32
    with pytest.raises(InputError, match="do not match"):
        select_best(masks, scores[:, :2])


# ---------------------------------------------------------------------------------------- segmenter


class _Recording:
    """A fake backend returning fixed outputs and keeping the inputs it received."""

    name = "fake"

    def __init__(self, masks: np.ndarray, scores: np.ndarray) -> None:
        self.outputs = {"masks": masks, "iou_scores": scores}
        self.inputs: dict[str, np.ndarray] = {}

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.inputs = dict(inputs)
        return self.outputs


def test_segmenter_keeps_best_mask_and_prepares_inputs() -> None:
    rng = np.random.default_rng(1)
    masks = rng.normal(0, 5, (2, 3, 8, 8)).astype(np.float32)
    scores = np.array([[0.1, 0.8, 0.5], [0.6, 0.2, 0.4]], np.float32)
    backend = _Recording(masks, scores)
    seg = SAM2Segmenter(backend, 32)
    assert isinstance(seg, Segmenter) and seg.uses_prompts and seg.input_size == 32
    images = rng.random((2, 32, 32)).astype(np.float32)
    points = np.array([[[1, 2]], [[30, 4]]], np.float32)
    probs, out_scores = seg.predict(images, points)
    np.testing.assert_allclose(probs[0], 1 / (1 + np.exp(-masks[0, 1])), rtol=1e-6)
    np.testing.assert_allclose(probs[1], 1 / (1 + np.exp(-masks[1, 0])), rtol=1e-6)
    np.testing.assert_array_equal(out_scores, scores[[0, 1], [1, 0]])
    sent = backend.inputs
    for c, (mean, std) in enumerate(zip(sm.PIXEL_MEAN, sm.PIXEL_STD, strict=True)):
        np.testing.assert_allclose(sent["image"][:, c], (images - mean) / std, rtol=1e-6)
    np.testing.assert_array_equal(sent["point_coords"], points)
    np.testing.assert_array_equal(sent["point_labels"], np.ones((2, 1), np.float32))
    assert all(v.dtype == np.float32 for v in sent.values())


def test_segmenter_on_torch_backend(model) -> None:
    backend = TorchBackend(model)
    seg = SAM2Segmenter(backend, S)
    rng = np.random.default_rng(2)
    images = rng.random((3, S, S)).astype(np.float32)
    points = (rng.random((3, 2, 2)) * S).astype(np.float32)
    probs, scores = seg.predict(images, points)
    assert probs.shape == (3, S // 4, S // 4) and probs.dtype == np.float32
    assert scores.shape == (3,) and scores.dtype == np.float32
    assert (probs >= 0).all() and (probs <= 1).all()
    out = backend.run(
        {"image": normalize(images), "point_coords": points, "point_labels": np.ones((3, 2), np.float32)}
    )
    best = out["iou_scores"].argmax(1)
    np.testing.assert_array_equal(scores, out["iou_scores"].max(1))
    np.testing.assert_allclose(probs, sigmoid(out["masks"][np.arange(3), best]), rtol=1e-6)


def test_segmenter_rejects_bad_input() -> None:
    seg = SAM2Segmenter(_Recording(np.zeros((1, 3, 8, 8), np.float32), np.zeros((1, 3), np.float32)), 32)
    with pytest.raises(InputError, match="needs point prompts"):
        seg.predict(np.zeros((1, 32, 32), np.float32), None)
    with pytest.raises(InputError, match=r"images have shape \(1, 16, 16\)"):
        seg.predict(np.zeros((1, 16, 16), np.float32), np.zeros((1, 1, 2), np.float32))
    with pytest.raises(InputError, match=r"points have shape \(2, 1, 2\)"):
        seg.predict(np.zeros((1, 32, 32), np.float32), np.zeros((2, 1, 2), np.float32))


def test_sigmoid_is_stable_at_extremes() -> None:
    x = np.array([-1e4, -10.0, 0.0, 10.0, 1e4], np.float32)
    with np.errstate(all="raise"):
        y = sigmoid(x)
    np.testing.assert_allclose(y, [0.0, 4.5398e-05, 0.5, 1 - 4.5398e-05, 1.0], atol=1e-7)
