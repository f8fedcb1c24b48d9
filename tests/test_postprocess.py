"""Topology-safe clean-up: speck removal per patch, small components and holes per image."""

from __future__ import annotations

import numpy as np
import pytest

from samsem.errors import ConfigError
from samsem.evaluation.components import label8
from samsem.runtime.stages.postprocess import PostprocessConfig, clean_mask, remove_specks


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


@pytest.mark.parametrize("seed", range(12))
def test_band_wise_clean_up_equals_the_whole_image(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    m = (rng.random((150, 70)) < rng.uniform(0.35, 0.65)).astype(np.uint8)
    cfg = PostprocessConfig(min_area=7, max_hole=15)
    whole, banded = m.copy(), m.copy()
    counts = clean_mask(whole, cfg, band_rows=10_000)
    assert clean_mask(banded, cfg, band_rows=int(rng.integers(3, 40))) == counts
    np.testing.assert_array_equal(banded, whole)
