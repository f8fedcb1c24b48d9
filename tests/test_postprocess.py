"""Topology-safe clean-up: speck removal per patch, small components and holes per image, faint
components."""

from __future__ import annotations

import numpy as np
import pytest

from samsem.errors import ConfigError
from samsem.evaluation.components import label8
from samsem.runtime.stages.postprocess import PostprocessConfig, clean_mask, remove_faint, remove_specks


def _ring(size: int, hole: int) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    m[2 : size - 2, 2 : size - 2] = 1
    c = size // 2
    m[c - hole // 2 : c - hole // 2 + hole, c - hole // 2 : c - hole // 2 + hole] = 0
    return m


def test_remove_specks_keeps_everything_larger() -> None:
    m = np.zeros((2, 40, 40), np.uint8)
    m[:, 5:10, 5:30] = 1  # 125 px line
    m[0, 20, 20] = 1  # a 1-px speck
    m[1, 30:34, 30:34] = 1  # a 16-px blob: a speck at max_size 16, kept at 15
    out = remove_specks(m, 16)
    assert out.dtype == np.uint8 and out[:, 5:10, 5:30].all()
    assert out.sum() == 2 * 125
    assert remove_specks(m, 15)[1].sum() == 125 + 16
    assert remove_specks(m.astype(bool), 16).sum() == 2 * 125


def test_clean_mask_fills_small_holes_only_and_removes_small_components() -> None:
    m = np.zeros((60, 120), np.uint8)
    m[:, :60] = _ring(60, 4)  # hole of 16 px: filled
    m[:, 60:] = _ring(60, 12)  # hole of 144 px: kept
    m[0, 100] = 1  # a speck on the border: removed
    removed, filled = clean_mask(m, PostprocessConfig(min_area=5, max_hole=64))
    assert (removed, filled) == (1, 16)
    assert m[28:32, 28:32].all() and not m[30, 90] and not m[0, 100]


def test_background_touching_the_border_is_never_a_hole() -> None:
    m = np.ones((20, 20), np.uint8)
    m[0:3, 8:12] = 0  # a 12-px notch open to the border
    assert clean_mask(m, PostprocessConfig(min_area=0, max_hole=64)) == (0, 0)
    assert (m[0:3, 8:12] == 0).all()


@pytest.mark.parametrize("seed", range(40))
def test_clean_mask_never_joins_or_splits_lines(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = (rng.random((48, 48)) < rng.uniform(0.3, 0.7)).astype(np.uint8)
    before, n = label8(m)
    sizes = np.bincount(before.ravel(), minlength=n + 1)
    out = m.copy()
    clean_mask(out, PostprocessConfig(min_area=6, max_hole=20))
    after, _ = label8(out)
    kept = [k for k in range(1, n + 1) if sizes[k] >= 6]
    for k in kept:  # each kept line is one component after, and no other line shares it
        assert len(np.unique(after[before == k])) == 1
    kept_labels = {int(after[before == k][0]) for k in kept}
    assert len(kept_labels) == len(kept)
    assert set(np.unique(after)) - {0} == kept_labels  # small lines are gone (or inside a filled hole)


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match=">= 0"):
        PostprocessConfig(min_area=-1)
    with pytest.raises(ConfigError, match="min_contrast <= 1"):
        PostprocessConfig(min_contrast=1.5)


@pytest.mark.parametrize("seed", range(12))
def test_band_wise_clean_up_equals_the_whole_image(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    m = (rng.random((150, 70)) < rng.uniform(0.35, 0.65)).astype(np.uint8)
    cfg = PostprocessConfig(min_area=7, max_hole=15)
    whole, banded = m.copy(), m.copy()
    counts = clean_mask(whole, cfg, band_rows=10_000)
    assert clean_mask(banded, cfg, band_rows=int(rng.integers(3, 40))) == counts
    np.testing.assert_array_equal(banded, whole)


def _crop_of(image: np.ndarray):
    return lambda box: image[box[0] : box[2], box[1] : box[3]]


def test_remove_faint_drops_faint_small_components_only() -> None:
    image = np.full((80, 120), 0.2, np.float32)
    m = np.zeros((80, 120), np.uint8)
    m[10:14, 10:40] = 1  # a small line, bright: kept
    image[10:14, 10:40] = 0.8
    m[30:36, 10:16] = 1  # a faint blob (contrast 0.05): removed
    image[30:36, 10:16] = 0.25
    m[50:70, 20:110] = 1  # faint but 1800 px, above faint_max_area: kept
    image[50:70, 20:110] = 0.22
    m[30:36, 60:66] = 1  # contrast 0.15 against its surroundings: kept at 0.12
    image[30:36, 60:66] = 0.35
    cfg = PostprocessConfig(min_contrast=0.12, faint_max_area=400)
    out = m.copy()
    assert remove_faint(out, _crop_of(image), cfg) == 36
    assert out[10:14, 10:40].all() and not out[30:36, 10:16].any() and out[50:70, 20:110].all()
    assert out[30:36, 60:66].all()
    stricter = m.copy()
    assert remove_faint(stricter, _crop_of(image), PostprocessConfig(min_contrast=0.2)) == 72
    assert remove_faint(m.copy(), _crop_of(image), PostprocessConfig(min_contrast=0)) == 0


@pytest.mark.parametrize("seed", range(10))
def test_band_wise_faint_removal_equals_the_whole_image(seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    m = (rng.random((160, 90)) < rng.uniform(0.2, 0.5)).astype(np.uint8)
    image = rng.random((160, 90)).astype(np.float32)
    cfg = PostprocessConfig(min_contrast=0.3, faint_max_area=30)
    whole, banded = m.copy(), m.copy()
    removed = remove_faint(whole, _crop_of(image), cfg, band_rows=10_000)
    assert removed > 0
    assert remove_faint(banded, _crop_of(image), cfg, band_rows=int(rng.integers(3, 40))) == removed
    np.testing.assert_array_equal(banded, whole)
    before, n = label8(m)
    after, _ = label8(whole)
    for k in range(1, n + 1):  # whole components are removed or kept, never cut or joined
        pixels = after[before == k]
        assert (pixels == 0).all() or len(np.unique(pixels)) == 1


def test_pipeline_judges_components_on_the_image_it_segmented() -> None:
    from dataclasses import replace

    from samsem.runtime.load import classical_pipeline
    from samsem.runtime.pipeline import Pipeline

    rng = np.random.default_rng(9)
    image = np.full((256, 256), 60.0)
    for y in range(6, 250, 10):  # 350-px lines (below faint_max_area) over 37 % of the image
        for x0 in (10, 90, 170):
            if not (x0 == 170 and 80 < y < 140):
                image[y : y + 5, x0 : x0 + 70] = 160
    image[105:115, 200:210] = 75  # a faint patch in the gap, which Sauvola (a local threshold) takes
    image = np.clip(image + rng.normal(0, 2, image.shape), 0, 255).astype(np.uint8)
    base = classical_pipeline("classical:sauvola")

    def run(post: PostprocessConfig) -> np.ndarray:
        pipe = Pipeline(base.model1, base.model2, replace(base.config, postprocess=post), base.info)
        return pipe.segment(image).mask

    plain, cleaned = run(PostprocessConfig(min_contrast=0)), run(PostprocessConfig())
    assert plain[105:115, 200:210].all() and not cleaned[105:115, 200:210].any()
    lines = image > 110
    np.testing.assert_array_equal(cleaned[lines], plain[lines])  # every line kept
    assert not (cleaned & ~plain).any()  # only deletions
    assert not run(PostprocessConfig(min_contrast=1.0, faint_max_area=100_000)).any()  # none that bright
