"""Electrically significant differences (ESD) between a predicted and a ground-truth metal mask.

Lines are the 8-connected components of a mask; a predicted line *hits* a ground-truth line when they
share at least one pixel. Rules, applied in this order:

1. Predicted lines smaller than ``min_area`` pixels are dropped (class ``SMALL``; they count for nothing).
2. The border band is every pixel closer than ``border`` pixels to an image edge. A ground-truth line
   lying wholly inside the band is *ignored*. A predicted line lying wholly inside it is a *band line*:
   its own false positive or short is never counted, but (default ``border_rule="published"``, the rule
   of Rothaug et al.'s ESD that the SAMSEM paper uses) it still hits ground-truth lines: it can make a
   considered line an open, and a considered line it alone hits is no false negative. With
   ``border_rule="drop"`` band lines are left out entirely (no part of an open, and they do not save a
   ground-truth line from being missed).
3. Among the *considered* predicted lines (at least ``min_area`` pixels, not wholly in the band), a line
   hitting k >= 2 considered ground-truth lines is a **short** counting k - 1; hits on ignored ground-truth
   lines never make shorts, and a line that hits only ignored lines is no error. A line hitting no
   ground-truth line at all is a **false positive**.
4. A considered ground-truth line hit by two or more predicted lines (considered, or band lines under the
   published rule) is an **open** (counts 1); one hit by none is a **false negative**.
5. A considered ground-truth line is *ok* when it is hit by exactly one predicted line and that line is
   not a counted short (the line is neither open, missed nor shorted).

``ESD rate = (opens + shorts + false positives + false negatives) / considered ground-truth lines``.

Everything runs on horizontal pixel runs (see :mod:`samsem.evaluation.components`): labelling, the
pred/gt overlap pairs and the counts never touch a per-pixel label image, so a 4096x3536 pair takes
about 10 ms on one CPU core (benchmarks/bench_esd.py). Label images are painted only for
:func:`esd_details` (overlays).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import IntEnum

import numba as nb
import numpy as np

from samsem.errors import ConfigError
from samsem.evaluation.components import mask_runs, paint_runs, run_sizes


class PredClass(IntEnum):
    """Classification of a predicted line (``ESDDetails.pred_class``); 0 is the background slot."""

    NONE = 0
    CORRECT = 1  # hits exactly one considered gt line, which no other predicted line hits
    SHORT = 2  # hits two or more considered gt lines
    OPEN = 3  # hits exactly one considered gt line that is open (hit by other predicted lines too)
    FALSE_POSITIVE = 4  # hits no gt line at all
    IGNORED = 5  # in the band and neither correct nor part of an open, or hits only ignored gt lines
    SMALL = 6  # fewer than min_area pixels, dropped before everything else


class GTClass(IntEnum):
    """Classification of a ground-truth line (``ESDDetails.gt_class``); 0 is the background slot."""

    NONE = 0
    OK = 1  # hit by exactly one predicted line, which is not a counted short
    OPEN = 2  # hit by two or more predicted lines
    SHORTED = 3  # hit by exactly one predicted line, which is a (counted) short
    FALSE_NEGATIVE = 4  # hit by no predicted line
    IGNORED = 5  # wholly inside the border band


BORDER_RULES = ("published", "drop")


@dataclass(frozen=True)
class ESDConfig:
    """ESD rules: ``border`` width of the ignored band in pixels, ``min_area`` smallest predicted line,
    ``border_rule`` what a predicted line wholly in the band does (module docstring, rule 2)."""

    border: int = 35
    min_area: int = 35
    border_rule: str = "published"

    def __post_init__(self) -> None:
        if self.border < 0 or self.min_area < 0:
            raise ConfigError(f"ESD border and min_area must be >= 0, got {self.border}, {self.min_area}")
        if self.border_rule not in BORDER_RULES:
            raise ConfigError(f"ESD border_rule must be one of {BORDER_RULES}, got {self.border_rule!r}")


@dataclass(frozen=True)
class ESDResult:
    """ESD counts of one image (or summed over several, see :meth:`__add__`).

    ``gt_lines`` counts the considered ground-truth lines (not ignored), ``gt_lines_ok`` those with no
    error, ``pred_lines`` the considered predicted lines (at least min_area pixels, not wholly in the band).
    """

    opens: int
    shorts: int
    false_positives: int
    false_negatives: int
    gt_lines: int
    gt_lines_ok: int
    pred_lines: int

    @property
    def errors(self) -> int:
        """opens + shorts + false positives + false negatives."""
        return self.opens + self.shorts + self.false_positives + self.false_negatives

    @property
    def rate(self) -> float:
        """errors / gt_lines; with no considered gt line: 0.0 without errors, ``inf`` with some."""
        if self.gt_lines == 0:
            return 0.0 if self.errors == 0 else math.inf
        return self.errors / self.gt_lines

    @property
    def ok_share(self) -> float:
        """Share of considered gt lines without error; 1.0 when there is no considered gt line."""
        return 1.0 if self.gt_lines == 0 else self.gt_lines_ok / self.gt_lines

    def __add__(self, other: ESDResult) -> ESDResult:
        """Sum of the counts (the rate of a sum is total errors / total considered lines)."""
        return ESDResult(**{k: getattr(self, k) + getattr(other, k) for k in self.__dataclass_fields__})

    def to_dict(self) -> dict[str, int | float]:
        """The counts plus ``errors``, ``rate`` and ``ok_share``."""
        return {**asdict(self), "errors": self.errors, "rate": self.rate, "ok_share": self.ok_share}


@dataclass(frozen=True)
class ESDDetails:
    """Per-line classification behind an :class:`ESDResult`, for overlays and debugging.

    pred_labels / gt_labels: (H, W) int32 8-connected labels, 0 = background, numbered in raster order of
    each line's first pixel. pred_class: (n_pred + 1,) int8 :class:`PredClass` by label; gt_class:
    (n_gt + 1,) int8 :class:`GTClass` by label (index 0 is the background).
    """

    result: ESDResult
    config: ESDConfig
    pred_labels: np.ndarray
    pred_class: np.ndarray
    gt_labels: np.ndarray
    gt_class: np.ndarray


# ----------------------------------------------------------------------------------------------- kernels


@nb.njit(cache=True)
def overlap_pairs(
    a_row: np.ndarray,
    a_start: np.ndarray,
    a_end: np.ndarray,
    a_label: np.ndarray,
    n_a: int,
    b_row: np.ndarray,
    b_start: np.ndarray,
    b_end: np.ndarray,
    b_label: np.ndarray,
    n_b: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of labels (a, b) whose components share pixels, with the shared pixel count.

    Both run lists (with their label counts n_a, n_b) must be in raster order, as from
    :func:`samsem.evaluation.components.mask_runs`. Returns ``(a, b, count)``, three (P,) int64 arrays
    sorted by (a, b), each pair once.
    """
    na = a_row.shape[0]
    nbr = b_row.shape[0]
    cap = na + nbr + 1  # each step of the sweep advances one run, so at most na + nbr overlaps
    keys = np.empty(cap, np.int64)
    counts = np.empty(cap, np.int64)
    last_slot = np.full(n_a + 1, -1, np.int64)
    stride = n_b + 1
    m = 0
    i = 0
    j = 0
    while i < na and j < nbr:
        if a_row[i] < b_row[j]:
            i += 1
            continue
        if b_row[j] < a_row[i]:
            j += 1
            continue
        s = max(a_start[i], b_start[j])
        e = min(a_end[i], b_end[j])
        if s < e:
            la = a_label[i]
            key = la * stride + b_label[j]
            slot = last_slot[la]
            if slot >= 0 and keys[slot] == key:  # same pair as this a-line's previous overlap
                counts[slot] += e - s
            else:
                keys[m] = key
                counts[m] = e - s
                last_slot[la] = m
                m += 1
        if a_end[i] <= b_end[j]:
            i += 1
        else:
            j += 1
    order = np.argsort(keys[:m], kind="mergesort")
    out_a = np.empty(m, np.int64)
    out_b = np.empty(m, np.int64)
    out_c = np.empty(m, np.int64)
    p = -1
    prev = -1
    for t in range(m):
        k = keys[order[t]]
        if k != prev:
            p += 1
            out_a[p] = k // stride
            out_b[p] = k % stride
            out_c[p] = 0
            prev = k
        out_c[p] += counts[order[t]]
    return out_a[: p + 1], out_b[: p + 1], out_c[: p + 1]


@nb.njit(cache=True)
def _inner(row, start, end, label, n: int, h: int, w: int, b: int) -> np.ndarray:
    """(n + 1,) bool: True where a component has a pixel outside the border band of width b."""
    inner = np.zeros(n + 1, np.bool_)
    for i in range(row.shape[0]):
        if b <= row[i] < h - b and max(start[i], b) < min(end[i], w - b):
            inner[label[i]] = True
    return inner


@nb.njit(cache=True)
def _classify(pred_size, pred_inner, gt_inner, pair_p, pair_g, min_area: int, band_hits: bool):
    """Apply the ESD rules (``band_hits``: band lines hit gt lines, the published rule); returns
    ``(pred_class, gt_class, counts)``, counts = opens, shorts, fps, fns, gt considered, gt ok, pred
    considered (int64)."""
    n_pred = pred_size.shape[0] - 1
    n_gt = gt_inner.shape[0] - 1
    considered = np.zeros(n_pred + 1, np.bool_)
    hitting = np.zeros(n_pred + 1, np.bool_)  # lines whose hits count: considered (+ band lines)
    pred_class = np.zeros(n_pred + 1, np.int8)
    for p in range(1, n_pred + 1):
        if pred_size[p] < min_area:
            pred_class[p] = 6  # SMALL
            continue
        considered[p] = pred_inner[p]
        hitting[p] = pred_inner[p] or band_hits
        if not pred_inner[p]:
            pred_class[p] = 5  # IGNORED (in the band), unless it turns out correct or part of an open
    k = np.zeros(n_pred + 1, np.int64)  # considered gt lines hit
    any_hit = np.zeros(n_pred + 1, np.bool_)
    h = np.zeros(n_gt + 1, np.int64)  # hitting pred lines per gt line
    first = np.zeros(n_gt + 1, np.int64)
    for t in range(pair_p.shape[0]):
        p = pair_p[t]
        g = pair_g[t]
        if not hitting[p]:
            continue
        any_hit[p] = True
        if gt_inner[g]:
            k[p] += 1
            if h[g] == 0:
                first[g] = p
            h[g] += 1
    counts = np.zeros(7, np.int64)
    gt_class = np.zeros(n_gt + 1, np.int8)
    for g in range(1, n_gt + 1):
        if not gt_inner[g]:
            gt_class[g] = 5  # IGNORED
            continue
        counts[4] += 1
        if h[g] == 0:
            gt_class[g] = 4  # FALSE_NEGATIVE
            counts[3] += 1
        elif h[g] >= 2:
            gt_class[g] = 2  # OPEN
            counts[0] += 1
        elif k[first[g]] >= 2 and considered[first[g]]:
            gt_class[g] = 3  # SHORTED
        else:
            gt_class[g] = 1  # OK
            counts[5] += 1
    for p in range(1, n_pred + 1):
        if not considered[p]:
            if hitting[p] and k[p] == 1:
                pred_class[p] = 1  # a band line on one gt line: CORRECT, unless that line is open
            continue
        counts[6] += 1
        if k[p] >= 2:
            pred_class[p] = 2  # SHORT
            counts[1] += k[p] - 1
        elif k[p] == 1:
            pred_class[p] = 1  # CORRECT, unless its gt line is open (fixed below)
        elif any_hit[p]:
            pred_class[p] = 5  # IGNORED: hits only ignored gt lines
        else:
            pred_class[p] = 4  # FALSE_POSITIVE
            counts[2] += 1
    for t in range(pair_p.shape[0]):
        p = pair_p[t]
        if not hitting[p] or gt_class[pair_g[t]] != 2:
            continue
        if pred_class[p] == 1 or not considered[p]:
            pred_class[p] = 3  # OPEN part (a band line on an open gt line is one too)
    return pred_class, gt_class, counts


# ------------------------------------------------------------------------------------------- public API


def _as_mask(a: np.ndarray, name: str) -> np.ndarray:
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) mask, got shape {a.shape}")
    a = np.ascontiguousarray(a)
    return a.view(np.uint8) if a.dtype == np.bool_ else a


def check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks as contiguous (H, W) arrays (bool viewed as uint8); ValueError when one is not 2-D or
    their sizes differ."""
    p = _as_mask(pred, "pred")
    g = _as_mask(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred and gt differ in size: {p.shape} vs {g.shape}")
    return p, g


def _run_esd(pred: np.ndarray, gt: np.ndarray, cfg: ESDConfig):
    p, g = check_pair(pred, gt)
    h, w = p.shape
    pr = mask_runs(p)
    gr = mask_runs(g)
    pa, ga, _ = overlap_pairs(*pr, *gr)
    pred_inner = _inner(*pr, h, w, cfg.border)
    gt_inner = _inner(*gr, h, w, cfg.border)
    pred_size = run_sizes(pr[1], pr[2], pr[3], pr[4])
    pred_class, gt_class, c = _classify(
        pred_size, pred_inner, gt_inner, pa, ga, cfg.min_area, cfg.border_rule == "published"
    )
    result = ESDResult(
        opens=int(c[0]),
        shorts=int(c[1]),
        false_positives=int(c[2]),
        false_negatives=int(c[3]),
        gt_lines=int(c[4]),
        gt_lines_ok=int(c[5]),
        pred_lines=int(c[6]),
    )
    return result, pr, gr, pred_class, gt_class


def esd(pred: np.ndarray, gt: np.ndarray, cfg: ESDConfig = ESDConfig()) -> ESDResult:
    """ESD counts of a predicted against a ground-truth mask.

    pred, gt: (H, W) masks of equal size, any integer or bool dtype, nonzero = metal.
    """
    return _run_esd(pred, gt, cfg)[0]


def _paint_labels(shape: tuple[int, int], runs) -> np.ndarray:
    row, start, end, label, _ = runs
    labels = np.zeros(shape, np.int32)
    paint_runs(labels, row, start, end, label, row.shape[0])
    return labels


def esd_details(pred: np.ndarray, gt: np.ndarray, cfg: ESDConfig = ESDConfig()) -> ESDDetails:
    """Like :func:`esd`, plus the label images and the class of every line (see :class:`ESDDetails`)."""
    result, pr, gr, pred_class, gt_class = _run_esd(pred, gt, cfg)
    shape = (pred.shape[0], pred.shape[1])
    return ESDDetails(
        result=result,
        config=cfg,
        pred_labels=_paint_labels(shape, pr),
        pred_class=pred_class,
        gt_labels=_paint_labels(shape, gr),
        gt_class=gt_class,
    )
