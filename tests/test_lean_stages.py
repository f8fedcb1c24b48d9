"""The lean host path: same results as the straightforward stages, whatever the threads and batches."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from samsem.errors import InputError
from samsem.runtime.config import PipelineConfig
from samsem.runtime.pipeline import FailedImage, Pipeline
from samsem.runtime.stages import prompts as pr
from samsem.runtime.stages.decision import DecisionConfig, decide, patch_stats
from samsem.runtime.stages.postprocess import remove_specks
from samsem.runtime.stages.preprocess import apply_range, resize_region
from samsem.runtime.stages.speckle import count_speckles
from samsem.runtime.stages.tiling import TilingConfig


def sem_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """(h, w) uint8: bright Manhattan lines on a darker background with noise."""
    rng = np.random.default_rng(seed)
    metal = np.zeros((h, w), bool)
    for y in range(4, h - 6, 17):
        metal[
            y : y + int(rng.integers(3, 8)), int(rng.integers(0, w // 3)) : w - int(rng.integers(0, w // 3))
        ] = True
    for x in rng.integers(0, w - 6, max(w // 40, 1)):
        y0 = int(rng.integers(0, h))
        metal[y0 : y0 + int(rng.integers(10, 80)), x : x + 4] = True
    img = np.where(metal, 190.0, 70.0) + rng.normal(0, 12, (h, w))
    return np.clip(img, 0, 255).astype(np.uint8)


class Thresholding:
    """SAM2-shaped stand-in: probs = input >= 0.5 sampled every ``step`` pixels; records its inputs."""

    uses_prompts = True

    def __init__(self, input_size: int, step: int = 4) -> None:
        self.input_size = input_size
        self.step = step
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []

    def predict(self, images: np.ndarray, points: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        assert points is not None and points.shape[:1] == images.shape[:1]
        self.calls.append((images.copy(), points.copy()))
        probs = (images[:, :: self.step, :: self.step] >= 0.5).astype(np.float32)
        return probs, images.mean(axis=(1, 2)).astype(np.float32)  # per input, whatever the batch


def _summary(results: list) -> list:
    out = []
    for r in results:
        if isinstance(r, FailedImage):
            out.append(("failed", r.name))
            continue
        report = r.report.to_json()
        report.pop("timings_s")
        report["config"].pop("batch_size")
        out.append((r.name, r.mask.tobytes(), report))
    return out


@pytest.mark.parametrize("rule", ["robust", "paper"])
def test_threads_batches_and_prefetch_do_not_change_results(rule: str) -> None:
    images = [sem_image(300, 300, 1), sem_image(170, 260, 2), sem_image(64, 90, 3)]
    cfg = PipelineConfig(tiling=TilingConfig(patch_size=64), decision=DecisionConfig(rule=rule))
    runs = []
    for workers, batch, prefetch in ((1, 1, 1), (3, 5, 2), (2, 16, 1)):
        seg1, seg2 = Thresholding(128), Thresholding(128)
        pipe = Pipeline(seg1, seg2, replace(cfg, batch_size=batch), workers=workers, prefetch=prefetch)
        sources = [(f"im{i}", lambda im=im: im) for i, im in enumerate(images)]
        runs.append(_summary(list(pipe.segment_many(sources))))
        assert max(len(x) for x, _ in seg2.calls) <= batch
    assert runs[0] == runs[1] == runs[2]
    assert [name for name, *_ in runs[0]] == ["im0", "im1", "im2"]


def test_reports_time_each_image_and_stage() -> None:
    pipe = Pipeline(
        Thresholding(128), Thresholding(128), PipelineConfig(tiling=TilingConfig(patch_size=64)), workers=2
    )
    res = pipe.segment(sem_image(200, 200))
    assert {
        "read",
        "levels",
        "prepare",
        "prompts",
        "model1",
        "model2",
        "decide",
        "stitch",
        "postprocess",
    } <= set(res.report.timings_s)
    assert all(v >= 0 for v in res.report.timings_s.values())


def test_failures_keep_order_and_errors_propagate() -> None:
    def bad() -> np.ndarray:
        raise InputError("broken.png", "truncated file")

    def crash() -> np.ndarray:
        raise RuntimeError("disk on fire")

    pipe = Pipeline(
        Thresholding(64), Thresholding(64), PipelineConfig(tiling=TilingConfig(patch_size=64)), workers=2
    )
    out = list(
        pipe.segment_many([("a", lambda: sem_image(100, 100)), ("b", bad), ("c", lambda: sem_image(80, 120))])
    )
    assert [type(r).__name__ for r in out] == ["SegmentResult", "FailedImage", "SegmentResult"]
    with pytest.raises(RuntimeError, match="disk on fire"):
        list(pipe.segment_many([("a", lambda: sem_image(100, 100)), ("x", crash)]))
    # stopping early leaves no thread behind and does not hang
    stream = pipe.segment_many([(f"i{k}", lambda: sem_image(100, 100)) for k in range(6)])
    first = next(iter(stream))
    stream.close()
    assert first.name == "i0"


def test_prompts_come_from_the_patch_and_land_on_metal() -> None:
    img = sem_image(256, 256, 5)
    seg2 = Thresholding(128)  # 64-px patches enlarged to 128 px: prompts at 64 px, mapped to 128
    Pipeline(None, seg2, PipelineConfig(tiling=TilingConfig(patch_size=64), single_scale=2)).segment(img)
    images = np.concatenate([c[0] for c in seg2.calls])
    points = np.concatenate([c[1] for c in seg2.calls])
    ix = np.clip(np.round(points[..., 0]).astype(int), 0, 127)
    iy = np.clip(np.round(points[..., 1]).astype(int), 0, 127)
    on = images[np.arange(len(images))[:, None], iy, ix]
    has_fg = ~np.all(points == 63.5, axis=(1, 2))
    assert has_fg.sum() > len(images) // 2
    assert np.all(on[has_fg] > 0.5)  # bright metal at the input resolution
    # a point at patch pixel (x, y) sits at the centre of its 2x2 block of the input
    np.testing.assert_array_equal(
        pr.to_input_coords(np.array([[0.0, 0.0], [63.0, 10.0]], np.float32), (64, 64), 128),
        [[0.5, 0.5], [126.5, 20.5]],
    )


def _remap_reference(prob: np.ndarray, full: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    h, w = prob.shape
    y0, x0, y1, x1 = box
    xs = (np.arange(x0, x1, dtype=np.float32) + 0.5) * np.float32(w / full[1]) - 0.5
    ys = (np.arange(y0, y1, dtype=np.float32) + 0.5) * np.float32(h / full[0]) - 0.5
    mx = np.broadcast_to(xs[None, :], (y1 - y0, x1 - x0)).astype(np.float32)
    my = np.broadcast_to(ys[:, None], (y1 - y0, x1 - x0)).astype(np.float32)
    return cv2.remap(prob, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


@pytest.mark.parametrize(("h", "full"), [(64, 1024), (32, 512), (64, 700), (50, 333)])
def test_resize_region_equals_remap(h: int, full: int) -> None:
    """OpenCV's bilinear remap to float32 rounding (resize_region computes separably, as the device
    stages do: tests/test_device_stages.py checks that bit for bit)."""
    rng = np.random.default_rng(h + full)
    prob = rng.random((h, h)).astype(np.float32)
    for _ in range(5):
        y0, x0 = (int(v) for v in rng.integers(0, full - 64, 2))
        box = (y0, x0, y0 + 64, min(x0 + 100, full))
        got, ref = resize_region(prob, (full, full), np.array(box)), _remap_reference(prob, (full, full), box)
        np.testing.assert_allclose(got, ref, atol=2e-6)
    edge = (full - 10, full - 10, full, full)  # replicated border
    np.testing.assert_allclose(
        resize_region(prob, (full, full), np.array(edge)),
        _remap_reference(prob, (full, full), edge),
        atol=2e-6,
    )


def _line_masks(rng: np.random.Generator, n: int, size: int, salt: float) -> np.ndarray:
    masks = np.zeros((n, size, size), np.uint8)
    for m in masks:
        for _ in range(int(rng.integers(1, 6))):
            t, a = int(rng.integers(2, 9)), int(rng.integers(0, size))
            m[a : a + t, int(rng.integers(0, size // 2)) : int(rng.integers(size // 2, size))] = 1
        m[rng.random((size, size)) < salt] = 1
        m[rng.random((size, size)) < salt / 3] = 0
    return masks


def _pair_reference(a: np.ndarray, b: np.ndarray, v: np.ndarray) -> list[int]:
    a, b, v = a.astype(bool), b.astype(bool), v.astype(bool)
    hv = v[:, 1:] & v[:, :-1]
    vv = v[1:] & v[:-1]
    edges = [int(((m[:, 1:] != m[:, :-1]) & hv).sum() + ((m[1:] != m[:-1]) & vv).sum()) for m in (a, b)]
    return [int(((a == b) & v).sum()), int((a & v).sum()), int((b & v).sum()), int(v.sum()), *edges]


@pytest.mark.parametrize("robust", [True, False])
@pytest.mark.parametrize("padded", [False, True])
def test_patch_stats_equal_separate_passes(robust: bool, padded: bool) -> None:
    rng = np.random.default_rng(int(robust) + 2 * int(padded))
    a, b = _line_masks(rng, 9, 48, 0.02), _line_masks(rng, 9, 48, 0.05)
    a[3] *= 7  # any nonzero value is foreground
    valid = np.ones(a.shape, np.uint8)
    if padded:
        valid[::2, :, 30:] = 0
        valid[1::3, 40:, :] = 0
    for parallel in (True, False):
        stats, ca, cb = patch_stats(a, b, valid if padded else None, 5, robust, parallel)
        for i in range(len(a)):
            sa, sb = (a[i] != 0).astype(np.uint8), (b[i] != 0).astype(np.uint8)
            assert stats[i, 0] == count_speckles(sa & valid[i], 5)[0]
            assert stats[i, 1] == count_speckles(sb & valid[i], 5)[0]
            ra = remove_specks(sa[None], 5)[0] if robust else sa
            rb = remove_specks(sb[None], 5)[0] if robust else sb
            np.testing.assert_array_equal(ca[i], ra)
            np.testing.assert_array_equal(cb[i], rb)
            assert stats[i, 2:].tolist() == _pair_reference(ra, rb, valid[i])
    serial = decide(a, b, DecisionConfig(), None, 2.0, parallel=False)
    threaded = decide(a, b, DecisionConfig(), None, 2.0, parallel=True)
    assert serial.reason.tolist() == threaded.reason.tolist()


def _opencv_level(u8: np.ndarray, cfg: pr.PromptConfig) -> int:
    """The level the prompts used to take with OpenCV's meanStdDev, Otsu and calcHist."""
    if float(cv2.meanStdDev(u8)[1][0, 0]) / 255.0 < cfg.min_contrast:
        return pr.NO_LEVEL
    otsu, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    hist = cv2.calcHist([u8], [0], None, [256], [0, 256]).ravel()
    quant = int(np.searchsorted(np.cumsum(hist), cfg.bright_quantile * u8.size, side="left"))
    return min(max(int(otsu) + 1, quant), pr.NO_LEVEL)


def test_prompt_levels_equal_opencv() -> None:
    rng = np.random.default_rng(0)
    cfg = pr.PromptConfig()
    for k in range(60):
        kind = k % 4
        if kind == 0:
            u8 = rng.integers(0, 256, (40, 50)).astype(np.uint8)
        elif kind == 1:
            u8 = np.clip(rng.normal(100 + k, 3 + k % 7, (64, 64)), 0, 255).astype(np.uint8)  # near-flat
        elif kind == 2:
            u8 = np.where(rng.random((32, 48)) < 0.3, 200, 60).astype(np.uint8)  # two levels
        else:
            u8 = sem_image(60, 60, k)
        assert pr.foreground_levels(pr._histogram(u8)[None], cfg)[0] == _opencv_level(u8, cfg)
        assert pr._otsu(pr._histogram(u8)) == int(
            cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)[0]
        )


def test_points_from_runs_equal_sampling_the_mask() -> None:
    for k in range(20):
        image = sem_image(64, 64, k).astype(np.float32) / 255
        cfg = pr.PromptConfig(n_points=3 + k % 5, min_object_px=0 if k % 2 else 64)
        fg = pr.candidate_foreground(image, cfg)
        points, has = pr.make_prompts(image[None], cfg, [(0, k)])
        expect = pr.sample_points(fg, cfg.n_points, np.random.default_rng((0, k)))
        assert has[0] == (len(expect) > 0)
        if has[0]:
            np.testing.assert_array_equal(points[0], expect)


def test_fused_intensity_mapping_equals_the_float32_formula() -> None:
    rng = np.random.default_rng(3)
    for dtype, top in ((np.uint8, 255), (np.uint16, 65535)):
        image = rng.integers(0, top + 1, (37, 53)).astype(dtype)
        for levels in ((10.3, 200.7), (0.0, 1.0), (1000.5, 1000.75), (float(top) * 0.2, float(top) * 0.9)):
            lo, hi = levels
            ref = np.clip((image.astype(np.float32) - np.float32(lo)) * np.float32(1.0 / (hi - lo)), 0, 1)
            np.testing.assert_array_equal(apply_range(image, levels), ref)
    floats = rng.random((4, 5, 6)).astype(np.float32)  # other shapes and dtypes: the numpy path
    np.testing.assert_array_equal(apply_range(floats, (0.25, 0.75)), np.clip((floats - 0.25) * 2, 0, 1))
