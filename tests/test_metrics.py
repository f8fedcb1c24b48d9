"""Pixel and instance metrics on hand-computed cases, plus a plain reference for AJI."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from samsem.evaluation.metrics import (
    PIXEL_METRICS,
    aji,
    aji_parts,
    confusion,
    metrics_from_confusion,
    pixel_metrics,
)


def draw(text: str) -> np.ndarray:
    rows = [r.strip() for r in text.strip().splitlines()]
    return np.array([[c == "#" for c in r] for r in rows], np.uint8)


def test_balanced_case() -> None:
    pred = np.array([[1, 1, 0], [0, 1, 0]], np.uint8)
    gt = np.array([[1, 0, 0], [1, 1, 0]], np.uint8)
    assert confusion(pred, gt) == (2, 1, 1, 2)
    m = pixel_metrics(pred, gt)
    want = {
        "accuracy": 4 / 6,
        "dice": 2 / 3,
        "iou": 0.5,
        "precision": 2 / 3,
        "recall": 2 / 3,
        "f1": 2 / 3,
        "miou": 0.5,
        "mean_pixel_accuracy": 2 / 3,
    }
    assert m.keys() == set(PIXEL_METRICS)
    assert m == pytest.approx(want, abs=1e-12)


def test_unbalanced_case() -> None:
    gt = np.zeros((4, 4), np.uint8)
    gt[1, 1:4] = 1
    pred = np.zeros((4, 4), np.uint8)
    pred[1, 2] = 1
    assert confusion(pred, gt) == (1, 0, 2, 13)
    m = pixel_metrics(pred, gt)
    want = {
        "accuracy": 14 / 16,
        "dice": 0.5,
        "iou": 1 / 3,
        "precision": 1.0,
        "recall": 1 / 3,
        "f1": 0.5,
        "miou": (1 / 3 + 13 / 15) / 2,
        "mean_pixel_accuracy": (1 / 3 + 1.0) / 2,
    }
    assert m == pytest.approx(want, abs=1e-12)


def test_empty_denominators() -> None:
    empty = np.zeros((3, 3), np.uint8)
    all_one = dict.fromkeys(PIXEL_METRICS, 1.0)
    assert pixel_metrics(empty, empty) == all_one
    assert pixel_metrics(np.zeros((0, 5), np.uint8), np.zeros((0, 5), np.uint8)) == all_one
    one = empty.copy()
    one[1, 1] = 1
    # nothing predicted: precision vacuous (1), recall 0
    want_missed = {"accuracy": 8 / 9, "dice": 0.0, "iou": 0.0, "precision": 1.0, "recall": 0.0}
    want_missed |= {"f1": 0.0, "miou": (0 + 8 / 9) / 2, "mean_pixel_accuracy": (0 + 1) / 2}
    assert pixel_metrics(empty, one) == pytest.approx(want_missed)
    # nothing to find: recall vacuous (1), precision 0
    want_spurious = {"accuracy": 8 / 9, "dice": 0.0, "iou": 0.0, "precision": 0.0, "recall": 1.0}
    want_spurious |= {"f1": 0.0, "miou": (0 + 8 / 9) / 2, "mean_pixel_accuracy": (1 + 8 / 9) / 2}
    assert pixel_metrics(one, empty) == pytest.approx(want_spurious)


def test_pooled_counts_and_dtypes() -> None:
    rng = np.random.default_rng(0)
    pred = rng.random((37, 53)) < 0.3
    gt = rng.random((37, 53)) < 0.4
    tp, fp, fn, tn = confusion(pred, gt)
    assert (tp, fp, fn, tn) == (
        int((pred & gt).sum()),
        int((pred & ~gt).sum()),
        int((~pred & gt).sum()),
        int((~pred & ~gt).sum()),
    )
    m = pixel_metrics(pred.astype(np.uint8) * 255, gt.astype(np.int16))
    assert m["iou"] == pytest.approx(tp / (tp + fp + fn)) and m["f1"] == pytest.approx(m["dice"])
    assert m == metrics_from_confusion(tp, fp, fn, tn)
    # counts summed over two halves give the metrics of the whole
    a = confusion(pred[:20], gt[:20])
    b = confusion(pred[20:], gt[20:])
    assert metrics_from_confusion(*(x + y for x, y in zip(a, b, strict=True))) == m


def test_size_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="differ in size"):
        pixel_metrics(np.zeros((3, 4), np.uint8), np.zeros((4, 3), np.uint8))
    with pytest.raises(ValueError, match="differ in size"):
        aji(np.zeros((3, 4), np.uint8), np.zeros((4, 3), np.uint8))


# ---------------------------------------------------------------------------------------------------- AJI


def test_aji_pred_paired_with_two_gt_lines_counts_twice_in_union() -> None:
    gt = draw("####.####")
    pred = draw("#########")
    assert aji_parts(pred, gt) == (8, 18)
    assert aji(pred, gt) == pytest.approx(4 / 9)


def test_aji_unpaired_instances_add_to_union() -> None:
    assert aji_parts(draw("###....##"), draw("####.....")) == (3, 6)  # unpaired prediction
    assert aji_parts(draw("###......"), draw("###...###")) == (3, 6)  # unpaired gt line
    assert aji(draw("##.##"), draw("#####")) == pytest.approx(2 / 7)


def test_aji_pairs_by_iou_not_by_intersection() -> None:
    gt = draw("""
        ##########..
        ............
        ............
    """)
    pred = draw("""
        #####.####..
        #####.......
        #####.......
    """)
    # P1: area 15, inter 5, IoU 0.25; P2: area 4, inter 4, IoU 0.4 -> P2 wins, P1 is unpaired
    assert aji_parts(pred, gt) == (4, 10 + 15)


def test_aji_bounds() -> None:
    empty = np.zeros((5, 5), np.uint8)
    line = empty.copy()
    line[2] = 1
    assert aji(empty, empty) == 1.0
    assert aji(line, line) == 1.0
    assert aji(empty, line) == 0.0
    assert aji(line, empty) == 0.0


def reference_aji(pred: np.ndarray, gt: np.ndarray) -> float:
    eight = np.ones((3, 3), int)
    pl, n_p = ndimage.label(pred != 0, structure=eight)
    gl, n_g = ndimage.label(gt != 0, structure=eight)
    if n_p == 0 and n_g == 0:
        return 1.0
    inter_total = 0
    union_total = 0
    used = set()
    for g in range(1, n_g + 1):
        gm = gl == g
        best, best_iou = None, 0.0
        for p in sorted(set(pl[gm].tolist()) - {0}):
            pm = pl == p
            iou = (gm & pm).sum() / (gm | pm).sum()
            if iou > best_iou:
                best, best_iou = p, iou
        if best is None:
            union_total += gm.sum()
        else:
            pm = pl == best
            inter_total += (gm & pm).sum()
            union_total += (gm | pm).sum()
            used.add(best)
    union_total += sum((pl == p).sum() for p in range(1, n_p + 1) if p not in used)
    return inter_total / union_total


@pytest.mark.parametrize("seed", range(60))
def test_aji_agrees_with_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 30, 2)
    gt = (rng.random((h, w)) < rng.uniform(0.1, 0.6)).astype(np.uint8)
    pred = gt ^ (rng.random((h, w)) < rng.uniform(0.0, 0.3)).astype(np.uint8)
    assert aji(pred, gt) == pytest.approx(reference_aji(pred, gt), abs=1e-12)
