"""Pixel and instance metrics of a binary metal mask against ground truth.

Masks are (H, W) arrays of any integer or bool dtype and any size, nonzero = metal (the positive class).
Convention for empty denominators: a ratio whose denominator is 0 is 1.0, because it only happens when
both compared sets are empty (nothing to find, nothing wrongly found); F1 is 0.0 when precision and recall
are both 0. With this rule F1 equals Dice (up to float rounding) for every input.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from samsem.evaluation.components import mask_runs, run_sizes
from samsem.evaluation.esd import check_pair, overlap_pairs

PIXEL_METRICS = ("accuracy", "dice", "iou", "precision", "recall", "f1", "miou", "mean_pixel_accuracy")


@nb.njit(cache=True)
def _confusion(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, int, int]:
    tp = 0
    n_pred = 0
    n_gt = 0
    for i in range(pred.shape[0]):
        p = pred[i] != 0
        g = gt[i] != 0
        tp += p and g
        n_pred += p
        n_gt += g
    return tp, n_pred - tp, n_gt - tp, pred.shape[0] - n_pred - n_gt + tp


def confusion(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, int, int]:
    """Pixel counts ``(tp, fp, fn, tn)`` of pred against gt, (H, W) masks of equal size."""
    p, g = check_pair(pred, gt)
    tp, fp, fn, tn = (int(v) for v in _confusion(p.reshape(-1), g.reshape(-1)))
    return tp, fp, fn, tn


def _ratio(num: float, den: float) -> float:
    return 1.0 if den == 0 else num / den


def metrics_from_confusion(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """The :data:`PIXEL_METRICS` from pixel counts (so counts summed over images give pooled metrics).

    miou and mean_pixel_accuracy average the metal and background classes.
    """
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    iou_fg = _ratio(tp, tp + fp + fn)
    iou_bg = _ratio(tn, tn + fn + fp)
    return {
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": iou_fg,
        "precision": precision,
        "recall": recall,
        "f1": 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall),
        "miou": (iou_fg + iou_bg) / 2,
        "mean_pixel_accuracy": (recall + _ratio(tn, tn + fp)) / 2,
    }


def pixel_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Pixel accuracy, Dice, IoU, precision, recall, F1, two-class mIoU and mean pixel accuracy.

    pred, gt: (H, W) masks of equal size, nonzero = metal. Empty denominators give 1.0 (module doc).
    """
    return metrics_from_confusion(*confusion(pred, gt))


def aji_parts(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    """Intersection and union sums of the Aggregated Jaccard Index; AJI = inter / union.

    Instances are the 8-connected components of each mask (no size filter). Each gt instance is paired
    with the predicted instance of highest IoU (ties: lowest label, i.e. first in raster order); gt
    instances overlapping nothing add their area to the union, and so do predicted instances paired with
    no gt instance (Kumar et al., 2017). A predicted instance paired with several gt instances enters the
    union once per pairing, as in the original definition.
    """
    p, g = check_pair(pred, gt)
    pr = mask_runs(p)
    gr = mask_runs(g)
    g_size = run_sizes(gr[1], gr[2], gr[3], gr[4])
    p_size = run_sizes(pr[1], pr[2], pr[3], pr[4])
    gi, pi, inter = overlap_pairs(*gr, *pr)  # sorted by gt label, then pred label
    union = g_size[gi] + p_size[pi] - inter
    iou = inter / union
    # per gt instance the pair of highest IoU; lexsort keeps the lowest pred label among equals
    order = np.lexsort((pi, -iou, gi))
    first = np.ones(order.shape[0], bool)
    first[1:] = gi[order[1:]] != gi[order[:-1]]
    best = order[first]
    unpaired_gt = np.ones(g_size.shape[0], bool)
    unpaired_gt[gi[best]] = False
    unpaired_pred = np.ones(p_size.shape[0], bool)
    unpaired_pred[pi[best]] = False
    total_inter = int(inter[best].sum())
    total_union = int(union[best].sum() + g_size[unpaired_gt].sum() + p_size[unpaired_pred].sum())
    return total_inter, total_union


def aji(pred: np.ndarray, gt: np.ndarray) -> float:
    """Aggregated Jaccard Index over 8-connected components in [0, 1]; 1.0 when both masks are empty."""
    inter, union = aji_parts(pred, gt)
    return _ratio(inter, union)
