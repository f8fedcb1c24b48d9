"""The device-resident stages (torch) equal the host stages (numpy), run here on CPU tensors."""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
import pytest
import torch
from test_lean_stages import Thresholding, sem_image

from samsem.evaluation.components import label8
from samsem.runtime.config import PipelineConfig
from samsem.runtime.pipeline import Pipeline, tensor_device
from samsem.runtime.stages import tensors as T
from samsem.runtime.stages.decision import DecisionConfig, patch_stats
from samsem.runtime.stages.preprocess import apply_range, estimate_background, intensity_range, resize_region
from samsem.runtime.stages.prompts import PromptConfig, candidate_foreground, make_prompts
from samsem.runtime.stages.speckle import count_speckles
from samsem.runtime.stages.tiling import TilingConfig, extract_patch, reflect_index


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Small tensors: one torch thread (OpenMP hand-offs dominate on a shared 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class TensorThresholding(Thresholding):
    """The stand-in of test_lean_stages on tensors too (what the device-resident stages call)."""

    tensor_device = "cpu"

    def predict_tensors(
        self, images: torch.Tensor, points: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        assert points is not None and points.shape[0] == images.shape[0] and images.dtype == torch.float32
        probs = (images[:, :: self.step, :: self.step] >= 0.5).to(torch.float32)
        return probs, images.mean(dim=(1, 2))


def _lines(rng: np.random.Generator, n: int, size: int, salt: float) -> np.ndarray:
    masks = np.zeros((n, size, size), bool)
    for m in masks:
        for _ in range(int(rng.integers(1, 5))):
            t, a = int(rng.integers(2, 7)), int(rng.integers(0, size))
            m[a : a + t, int(rng.integers(0, size // 2)) : int(rng.integers(size // 2, size))] = True
            m[int(rng.integers(0, size // 2)) : int(rng.integers(size // 2, size)), a : a + t] = True
        m[rng.random((size, size)) < salt] = True
    return masks


def test_patches_and_intensities_equal_numpy() -> None:
    for dtype, top in ((np.uint8, 255), (np.uint16, 65535)):
        img = (sem_image(150, 170, 1).astype(np.float64) * top / 255).astype(dtype)
        levels = intensity_range(img)
        # the last three are mirrored (once, several times, and from a 1-px row)
        boxes = np.array(
            [[0, 0, 64, 64], [50, 100, 114, 164], [100, 120, 150, 170], [5, 7, 25, 17], [9, 0, 10, 64]]
        )
        got = T.apply_range(T.extract_patches(T.upload(img, "cpu"), boxes, 64), levels).numpy()
        ref = np.stack([apply_range(extract_patch(img, b, 64), levels) for b in boxes])
        np.testing.assert_array_equal(got, ref)
        # flattened: the background sampled at the same (mirrored) pixels by the very same float32 operations
        background = estimate_background(img, 40)
        assert background is not None
        patches = T.extract_patches(T.upload(img, "cpu"), boxes, 64)
        flat = T.flatten_patches(
            patches, torch.from_numpy(background.map), background.level, img.shape, boxes
        )
        for k, b in enumerate(boxes):
            rows, cols = b[0] + reflect_index(64, b[2] - b[0]), b[1] + reflect_index(64, b[3] - b[1])
            host = background.flatten(extract_patch(img, b, 64), rows, cols, img.shape)
            np.testing.assert_array_equal(flat[k].numpy(), host)


def test_prompts_equal_numpy() -> None:
    rng = np.random.default_rng(0)
    images = np.stack([sem_image(64, 64, k).astype(np.float32) / 255 for k in range(6)])
    images[2] = 0.4 + rng.normal(0, 0.005, (64, 64)).astype(np.float32)  # flat: no prompts
    for cfg in (
        PromptConfig(),
        PromptConfig(morph_radius=2, denoise_ksize=5, n_points=7),
        PromptConfig(min_object_px=0),
    ):
        fg = T.candidate_foreground(torch.from_numpy(images), cfg).numpy()
        np.testing.assert_array_equal(fg, np.stack([candidate_foreground(im, cfg) for im in images]))
        seeds = [(3, 2, k) for k in range(len(images))]
        got, ref = T.make_prompts(torch.from_numpy(images), cfg, seeds), make_prompts(images, cfg, seeds)
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_array_equal(got[1], ref[1])
        assert not ref[1][2] and ref[1].sum() == 5


@pytest.mark.parametrize("max_rounds", [32, 1])
def test_component_sizes_equal_labelling(max_rounds: int) -> None:
    """Label propagation gives the components of the run-based labeller; masks that do not settle in
    ``max_rounds`` rounds (all of them with 1) are labelled on the host: the same sizes either way."""
    rng = np.random.default_rng(max_rounds)
    masks = np.concatenate([_lines(rng, 6, 40, 0.03), rng.random((2, 40, 40)) < 0.45])  # + percolating noise
    sizes = T.component_sizes(torch.from_numpy(masks), max_rounds).numpy()
    for m, s in zip(masks, sizes, strict=True):
        lab, n = label8(m)
        per = np.bincount(lab.ravel(), minlength=n + 1)
        per[0] = 0
        np.testing.assert_array_equal(s, per[lab])
    np.testing.assert_array_equal(
        T.count_small(torch.from_numpy(sizes), 4).numpy(), count_speckles(masks.view(np.uint8), 4)
    )
    _, converged = T.label_components(torch.from_numpy(masks[:6]))
    assert converged.all()  # line masks settle in a few rounds


@pytest.mark.parametrize("robust", [True, False])
def test_decision_statistics_equal_numpy(robust: bool) -> None:
    rng = np.random.default_rng(int(robust))
    a, b = _lines(rng, 8, 48, 0.02), _lines(rng, 8, 48, 0.04)
    valid = np.ones(a.shape, bool)
    valid[::3, :, 33:] = False
    for v in (None, valid):
        ref = patch_stats(
            a.view(np.uint8), b.view(np.uint8), None if v is None else v.view(np.uint8), 6, robust
        )
        got = T.patch_stats(
            torch.from_numpy(a), torch.from_numpy(b), None if v is None else torch.from_numpy(v), 6, robust
        )
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_array_equal(got[1].numpy(), ref[1].astype(bool))
        np.testing.assert_array_equal(got[2].numpy(), ref[2].astype(bool))


def test_probability_resampling_equals_numpy() -> None:
    """Model probabilities are resampled bit for bit as on the host: a value on the threshold (binary
    probabilities upsampled give exact halves) decides the same way on both paths (issue 25.5)."""
    rng = np.random.default_rng(2)
    for prob in (rng.random((32, 32)).astype(np.float32), (rng.random((128, 128)) < 0.5).astype(np.float32)):
        for full in ((256, 256), (300, 220), (50, 40), (200, 260)):
            boxes = np.array(
                [[0, 0, 40, 40], [10, 9, 50, 40], [full[0] - 40, full[1] - 40, full[0], full[1]]]
            )
            got = T.upsample_boxes(torch.from_numpy(prob), full, boxes, 40).numpy()
            for k, b in enumerate(boxes):
                h, w = b[2] - b[0], b[3] - b[1]
                np.testing.assert_array_equal(got[k, :h, :w], resize_region(prob, full, b))
    small = torch.from_numpy(rng.random((3, 16, 16)).astype(np.float32))
    for size in (64, 10):
        whole = np.array([0, 0, size, size])
        ref = np.stack([resize_region(p, (size, size), whole) for p in small.numpy()])
        np.testing.assert_array_equal(T.resize_probs(small, size).numpy(), ref)
        cv = np.stack([cv2.resize(p, (size, size), interpolation=cv2.INTER_LINEAR) for p in small.numpy()])
        np.testing.assert_allclose(ref, cv, atol=1e-6)


@pytest.mark.parametrize(
    ("rule", "single_scale", "shape"),
    [
        ("robust", None, (200, 260)),
        ("paper", None, (150, 150)),
        ("robust", 2, (130, 190)),
        ("robust", 1, (96, 128)),
        ("robust", None, (50, 40)),
    ],
)
def test_device_pipeline_equals_host_pipeline(
    rule: str, single_scale: int | None, shape: tuple[int, int]
) -> None:
    img = sem_image(*shape, seed=7)
    cfg = PipelineConfig(
        tiling=TilingConfig(patch_size=64),
        batch_size=5,
        single_scale=single_scale,
        decision=DecisionConfig(rule=rule),
    )
    host = Pipeline(TensorThresholding(128), TensorThresholding(128), cfg).segment(img)
    dev = Pipeline(TensorThresholding(128), TensorThresholding(128), cfg, device="cpu").segment(img)
    a, b = host.report.to_json(), dev.report.to_json()
    np.testing.assert_array_equal(dev.mask, host.mask)
    for ra, rb in zip(a["patches"], b["patches"], strict=True):
        # the score comes from the model inputs, resized to float rounding; agreement etc. exactly
        assert ra.pop("score", 0) == pytest.approx(rb.pop("score", 0), abs=1e-4)
        assert ra == rb
    assert a["patch_sources"] == b["patch_sources"]


def test_sam2_and_lite_segmenters_on_tensors(tiny_sam2_checkpoint) -> None:
    from samsem.runtime.backends.pytorch import TorchBackend
    from samsem.runtime.models import lite as lm
    from samsem.runtime.models.lite import LiteSegmenter
    from samsem.runtime.models.registry import load_model
    from samsem.runtime.models.sam2 import SAM2Segmenter

    rng = np.random.default_rng(0)
    loaded = load_model(tiny_sam2_checkpoint(128))
    seg = SAM2Segmenter(TorchBackend(loaded.module), 128)
    images = rng.random((3, 128, 128), dtype=np.float32)
    points = (rng.random((3, 4, 2)) * 128).astype(np.float32)
    probs, scores = seg.predict(images, points)
    tp, ts = seg.predict_tensors(torch.from_numpy(images), torch.from_numpy(points))
    np.testing.assert_allclose(tp.numpy(), probs, atol=1e-6)
    np.testing.assert_allclose(ts.numpy(), scores, atol=1e-6)
    assert seg.tensor_device == "cpu"
    lite = LiteSegmenter(TorchBackend(lm.LiteNet(lm.tiny_lite_spec(64)).eval()), 64)
    images = rng.random((2, 64, 64), dtype=np.float32)
    probs, scores = lite.predict(images)
    tp, ts = lite.predict_tensors(torch.from_numpy(images))
    np.testing.assert_allclose(tp.numpy(), probs, atol=1e-6)
    np.testing.assert_allclose(ts.numpy(), scores, atol=1e-6)


def test_stage_set_choice() -> None:
    class On(TensorThresholding):
        def __init__(self, device: str | None) -> None:
            super().__init__(64)
            self.tensor_device = device

    assert tensor_device([On("cuda:0"), On("cuda:0")]) == "cuda:0"
    assert tensor_device([On("cuda:0"), None]) == "cuda:0"
    assert tensor_device([On("cpu"), On("cpu")]) is None  # CPU models: numpy stages unless forced
    assert tensor_device([On("cuda:0"), On(None)]) is None
    assert tensor_device([On("cuda:0"), On("cuda:1")]) is None
    pipe = Pipeline(Thresholding(64), Thresholding(64), PipelineConfig())
    assert pipe.device is None and type(pipe.stages).__name__ == "HostStages"
    with pytest.raises(Exception, match="cannot run on device tensors"):
        Pipeline(Thresholding(64), Thresholding(64), PipelineConfig(), device="cpu")


def test_served_pipeline_takes_the_tensor_path() -> None:
    """The server's batchers declare their model's tensor path, so a served model with one runs the
    device-resident stages (here on CPU tensors), with the host's mask; one without it stays on the host."""
    from samsem.server.batching import BatchingSegmenter, Ticket
    from samsem.server.engine import Engine

    img = sem_image(150, 150, seed=7)
    cfg = PipelineConfig(
        tiling=TilingConfig(patch_size=64), batch_size=5, decision=DecisionConfig(rule="paper")
    )
    host = Pipeline(TensorThresholding(128), TensorThresholding(128), cfg).segment(img)
    model = TensorThresholding(128)
    engine = Engine(Pipeline(model, model, cfg, device="cpu"), max_batch=8, max_delay_s=0.0, request_batch=3)
    try:
        served = engine.pipeline({})
        assert type(served.stages).__name__ == "DeviceStages"
        with engine.session(Ticket()):
            result = served.segment(img)
    finally:
        engine.close()
    np.testing.assert_array_equal(result.mask, host.mask)
    assert model.calls == []  # every model call took tensors (numpy predict records its inputs)

    class OnCuda(TensorThresholding):
        tensor_device = "cuda:0"

    for inner, device in ((OnCuda(64), "cuda:0"), (Thresholding(64), None)):
        batcher = BatchingSegmenter(inner)
        try:
            assert batcher.tensor_device == device and tensor_device([batcher, batcher]) == device
        finally:
            batcher.close()
