"""The multi-scale pipeline: exact stitching, decisions in context, batching, failures, memory bound."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from functools import partial

import cv2
import numpy as np
import pytest

from samsem.errors import InputError
from samsem.runtime.config import PipelineConfig
from samsem.runtime.load import classical_pipeline
from samsem.runtime.pipeline import FailedImage, Pipeline
from samsem.runtime.stages.decision import DecisionConfig
from samsem.runtime.stages.tiling import TilingConfig


class Identity:
    """Segmenter whose probability map is its input: the pipeline must reproduce binary images."""

    uses_prompts = False

    def __init__(self, input_size: int) -> None:
        self.input_size = input_size
        self.batches: list[int] = []

    def predict(self, images, points=None):
        self.batches.append(len(images))
        return images.astype(np.float32), np.ones(len(images), np.float32)


class Speckled(Identity):
    """Identity plus salt noise: every output is 'speckled' (>= 50 single-pixel specks)."""

    def predict(self, images, points=None):
        probs, scores = super().predict(images, points)
        probs = probs.copy()
        probs[:, 3::9, 3::9] = 1.0 - probs[:, 3::9, 3::9]
        return probs, scores


class Salted(Identity):
    """Identity plus >= 50 single-pixel specks on the background, away from the metal."""

    def predict(self, images, points=None):
        probs, scores = super().predict(images, points)
        probs = probs.copy()
        grid = np.zeros(probs.shape[1:], bool)
        grid[3::9, 3::9] = True
        for p in probs:
            near_metal = cv2.dilate((p > 0.5).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
            p[grid & ~near_metal] = 1.0
        return probs, scores


def _lines(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w), np.uint8)
    for y in range(5, h - 8, 23):
        img[
            y : y + int(rng.integers(4, 9)), int(rng.integers(0, w // 3)) : w - int(rng.integers(0, w // 3))
        ] = 255
    img[h // 3 : h // 3 + 40, w // 2 : w // 2 + 40] = 255  # a pad
    return img


@pytest.mark.parametrize("shape", [(300, 300), (700, 1030), (131, 97)])
def test_identity_two_scale_reproduces_input(shape: tuple[int, int]) -> None:
    img = _lines(*shape)
    tiling = TilingConfig(patch_size=128, min_overlap=0.1)
    model1 = Identity(input_size=shape[0]) if shape[0] == shape[1] else None
    cfg = PipelineConfig(tiling=tiling, single_scale=None if model1 else 2, batch_size=5)
    res = Pipeline(model1, Identity(128), cfg).segment(img)
    np.testing.assert_array_equal(res.mask, (img > 0).astype(np.uint8))
    assert res.report.to_json()["n_patches"] == len(res.report.to_json()["patches"])
    if model1 is not None:
        assert res.report.to_json()["patch_sources"] == {"model2": res.report.to_json()["n_patches"]}


def test_single_scale_1_reproduces_input() -> None:
    img = _lines(256, 256)
    cfg = PipelineConfig(tiling=TilingConfig(patch_size=64), single_scale=1)
    res = Pipeline(Identity(256), None, cfg).segment(img)
    np.testing.assert_array_equal(res.mask, (img > 0).astype(np.uint8))
    assert set(res.report.to_json()["patch_sources"]) == {"model1"}


def test_speckled_model2_is_replaced_by_model1() -> None:
    img = _lines(256, 256)
    cfg = PipelineConfig(tiling=TilingConfig(patch_size=128), decision=DecisionConfig(rule="paper"))
    res = Pipeline(Identity(256), Speckled(128), cfg).segment(img)
    np.testing.assert_array_equal(res.mask, (img > 0).astype(np.uint8))
    assert res.report.to_json()["patch_sources"] == {"model1": res.report.to_json()["n_patches"]}
    assert all(r["speckles2"] >= 50 > r["speckles1"] for r in res.report.to_json()["patches"])


def test_robust_rule_keeps_model2_without_its_specks() -> None:
    img = _lines(256, 256)
    cfg = PipelineConfig(tiling=TilingConfig(patch_size=128))
    res = Pipeline(Identity(256), Salted(128), cfg).segment(img)
    np.testing.assert_array_equal(res.mask, (img > 0).astype(np.uint8))
    assert res.report.to_json()["patch_sources"] == {"model2": res.report.to_json()["n_patches"]}
    assert all(r["reason"] == "agree" and r["speckles2"] >= 50 for r in res.report.to_json()["patches"])


def test_both_speckled_flags_and_falls_back() -> None:
    img = _lines(256, 256)
    cfg = PipelineConfig(tiling=TilingConfig(patch_size=128), decision=DecisionConfig(fallback="sauvola"))
    res = Pipeline(Speckled(256), Speckled(128), cfg).segment(img)
    assert res.report.to_json()["flagged"] == list(range(res.report.to_json()["n_patches"]))
    assert res.report.to_json()["patch_sources"] == {"fallback": res.report.to_json()["n_patches"]}
    # Sauvola on a clean binary image finds the lines: most metal pixels are recovered
    truth = img > 0
    assert (res.mask.astype(bool) & truth).sum() > 0.8 * truth.sum()


def test_batching_across_images_is_order_independent() -> None:
    imgs = [_lines(300, 300, seed=s) for s in range(3)]
    cfg = PipelineConfig(tiling=TilingConfig(patch_size=128), batch_size=7)
    shared = Identity(128)  # one set of weights at both scales: model-1 and model-2 inputs share batches
    pipe = Pipeline(Speckled(128), shared, cfg)
    results = list(pipe.segment_many([(f"im{i}", lambda im=im: im) for i, im in enumerate(imgs)]))
    assert [r.name for r in results] == ["im0", "im1", "im2"]
    assert max(shared.batches) == 7
    alone = Pipeline(
        Speckled(128), Identity(128), PipelineConfig(tiling=TilingConfig(patch_size=128), batch_size=1)
    )
    for r, im in zip(results, imgs, strict=True):
        np.testing.assert_array_equal(r.mask, alone.segment(im).mask)


def test_failed_image_does_not_stop_the_stream() -> None:
    def bad() -> np.ndarray:
        raise InputError("broken.png", "truncated file")

    pipe = classical_pipeline(config=PipelineConfig(tiling=TilingConfig(patch_size=64)))
    out = list(
        pipe.segment_many([("a", lambda: _lines(100, 100)), ("broken", bad), ("c", lambda: _lines(90, 120))])
    )
    assert [type(r).__name__ for r in out] == ["SegmentResult", "FailedImage", "SegmentResult"]
    assert isinstance(out[1], FailedImage) and "truncated file" in str(out[1].error)


def test_classical_default_finds_lines_on_synthetic_sem() -> None:
    from samsem.synth.generate import generate_sample

    sample = generate_sample("easy", 512, 512, seed=3)
    res = classical_pipeline(config=PipelineConfig(tiling=TilingConfig(patch_size=256))).segment(sample.image)
    inter = (res.mask & sample.mask).sum()
    dice = 2 * inter / (res.mask.sum() + sample.mask.sum())
    assert dice > 0.7, dice


def test_peak_memory_16k_image_is_bounded() -> None:
    """A 16k x 16k 8-bit image costs image + mask + a fixed per-batch budget, nothing proportional more."""
    code = textwrap.dedent(
        """
        import json, resource, numpy as np
        from samsem.runtime.config import PipelineConfig
        from samsem.runtime.pipeline import Pipeline
        from samsem.runtime.stages.classical import ClassicalSegmenter, ClassicalConfig
        cc = ClassicalConfig(method="otsu", min_object_px=0, morph_radius=0)
        seg = ClassicalSegmenter(cc, input_size=64)
        pipe = Pipeline(seg, seg, PipelineConfig(batch_size=16))
        pipe.segment(np.zeros((64, 64), np.uint8))  # warm up (Numba JIT, imports)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        n = 16384
        img = np.zeros((n, n), np.uint8)
        img[::64] = 200
        res = pipe.segment(img)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"base_mb": base / 1024, "peak_mb": peak / 1024, "fg": float(res.mask.mean()),
                          "patches": res.report.to_json()["n_patches"]}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600
    )
    stats = json.loads(out.stdout.strip().splitlines()[-1])
    image_and_mask_mb = 2 * 16384 * 16384 / 2**20
    assert stats["patches"] == 36 * 36
    assert stats["fg"] > 0.01
    assert stats["peak_mb"] - stats["base_mb"] < image_and_mask_mb + 400, stats


class _Stop(Exception):
    """What the test's cancellation check raises."""


@pytest.mark.parametrize("workers", [1, 3])
def test_a_cancelled_check_stops_a_multi_patch_run_before_all_patches(workers: int) -> None:
    """The check is made at every stage boundary: cancelled after the first model batch, the run
    ends with the check's error and the model never sees most of the image's patches (issue 26.2)."""
    seg = Identity(64)
    cfg = PipelineConfig(tiling=TilingConfig(patch_size=64), single_scale=2, batch_size=1)
    pipe = Pipeline(None, seg, cfg, workers=workers)
    image = _lines(512, 512)
    total = pipe.count_inputs(*image.shape)
    cancelled = False

    def check() -> None:
        if cancelled:
            raise _Stop

    def progress(n: int) -> None:
        nonlocal cancelled
        cancelled = True

    with pytest.raises(_Stop):
        list(pipe.segment_many([("a", lambda: image)], progress, check))
    assert total > 50 and 1 <= len(seg.batches) <= 2  # the batch running when it was cancelled, at most


def test_a_check_made_while_reading_stops_before_any_model_call() -> None:
    seg = Identity(64)
    pipe = Pipeline(None, seg, PipelineConfig(tiling=TilingConfig(patch_size=64), single_scale=2))
    calls = 0

    def check() -> None:
        nonlocal calls
        calls += 1
        raise _Stop

    with pytest.raises(_Stop):
        list(pipe.segment_many([("a", lambda: _lines(256, 256))], check=check))
    assert calls >= 1 and seg.batches == []


def test_images_in_flight_do_not_grow_with_the_number_of_images() -> None:
    """Tiny images read faster than results are made must not pile up (memory grew with the number of
    files, issue 26.7): images read but not yet yielded stay under a bound set by the batch size (before
    the fix about half of all images read were still held: 237 of 400)."""
    pipe = classical_pipeline(config=PipelineConfig(batch_size=8))
    rng = np.random.default_rng(0)
    loaded = 0

    def load(image: np.ndarray) -> np.ndarray:
        nonlocal loaded
        loaded += 1
        return image

    sources = [(str(i), partial(load, rng.integers(0, 255, (16, 16), np.uint8))) for i in range(400)]
    in_flight = [loaded - k for k, _ in enumerate(pipe.segment_many(sources))]
    bound = 4 * pipe.config.batch_size + pipe.prefetch + 2  # the batches in flight, the reading queue
    assert len(in_flight) == 400
    assert max(in_flight) <= bound, (max(in_flight), bound)
