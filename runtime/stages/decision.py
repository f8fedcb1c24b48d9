"""Per-patch choice between model 1 (whole image) and model 2 (patches).

Two rules (``DecisionConfig.rule``); both compare the two models' masks over each 512-px patch on
``valid`` pixels only (real image pixels, not padding; a patch with no valid pixel counts as agreeing):

* a mask is *speckled* when it has ``>= speckled_min_count`` speckles (8-connected components of
  ``<= speckle_max_px`` pixels), counted after clearing padded pixels;
* the masks *agree* when the fraction of identical pixels is ``>= agree_min``.

``"paper"`` — the SAMSEM paper's rule, branches in order (``Reason`` names the branch in reports):

1. both speckled → ``BOTH_SPECKLED``: flagged for manual inspection; the patch is filled per
   ``fallback``: ``"sauvola"`` → ``Source.FALLBACK`` (the pipeline runs the classical Sauvola
   segmenter), ``"model1"``/``"model2"`` → that model;
2. only model 2 speckled → ``M2_SPECKLED`` → model 1;
3. only model 1 speckled → ``M1_SPECKLED`` → model 2;
4. neither speckled, agreeing → ``AGREE`` → model 2 (finer scale);
5. neither speckled, disagreeing — left open by the paper. Model 2 sees only a 512-px window and its
   known failure is a polarity flip (dielectric taken for metal) or a gross fill/miss when the window
   holds little context; model 1 sees the whole image and does not have that failure. So:

   * ``INVERTED`` → model 1 when model 2 is closer to the inverse of model 1 than to model 1 itself
     (agreement ``< 0.5``);
   * ``FG_MISMATCH`` → model 1 when the foreground fractions differ by more than ``fg_fraction_tol``
     (default 0.25: a quarter of the patch switched class is a gross error, not the boundary shifts
     and thin-line differences that make up ordinary disagreement between the scales);
   * otherwise ``DISAGREE`` → model 2 (a moderate disagreement, which the finer scale usually wins).

``"robust"`` (the default) — the paper's rule sends a patch to model 1 whenever model 2 has many
specks, although ≤ 16-px specks are noise that a clean-up removes (and the ESD ignores), and model 1 sees
the whole image squeezed into its input, where lines of a large image become thinner than a pixel and
merge. So: specks are removed from both masks (``Decisions.mask1/mask2`` are the cleaned masks) and
agreement and foreground fractions are measured after that; model 1 is not trusted where its downscaling
makes the patch's lines thinner than ``min_line_px`` at its input (line width estimated as 2 · area /
edge length of the cleaned mask of model 2, of model 1 where model 2 is empty) → ``MODEL1_COARSE`` →
model 2; otherwise speckle counts alone decide nothing, and the branches are ``BOTH_SPECKLED`` (flag,
fallback), ``AGREE``, ``INVERTED``, ``FG_MISMATCH``, ``DISAGREE`` as above.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numba as nb
import numpy as np

from samsem.errors import ConfigError
from samsem.runtime.stages.postprocess import remove_specks
from samsem.runtime.stages.speckle import count_speckles, parallel_guard

FALLBACKS = ("model1", "model2", "sauvola")
RULES = ("robust", "paper")


@dataclass(frozen=True)
class DecisionConfig:
    """The per-patch decision: its rule (see the module docstring) and thresholds (the paper's;
    ``fg_fraction_tol`` and ``min_line_px`` are ours)."""

    speckle_max_px: int = 16
    speckled_min_count: int = 50
    agree_min: float = 0.60
    fg_fraction_tol: float = 0.25
    fallback: str = "model2"
    rule: str = "robust"
    min_line_px: float = 2.0

    def __post_init__(self) -> None:
        if self.speckle_max_px < 1:
            raise ConfigError(f"speckle_max_px must be >= 1, got {self.speckle_max_px}")
        if self.speckled_min_count < 1:
            raise ConfigError(f"speckled_min_count must be >= 1, got {self.speckled_min_count}")
        if not 0.0 <= self.agree_min <= 1.0:
            raise ConfigError(f"agree_min must be in [0, 1], got {self.agree_min}")
        if not 0.0 <= self.fg_fraction_tol <= 1.0:
            raise ConfigError(f"fg_fraction_tol must be in [0, 1], got {self.fg_fraction_tol}")
        if self.fallback not in FALLBACKS:
            raise ConfigError(f"fallback must be one of {', '.join(FALLBACKS)}, got {self.fallback!r}")
        if self.rule not in RULES:
            raise ConfigError(f"decision rule must be one of {', '.join(RULES)}, got {self.rule!r}")
        if self.min_line_px < 0:
            raise ConfigError(f"min_line_px must be >= 0, got {self.min_line_px}")


class Source(IntEnum):
    """Where a patch's final mask comes from."""

    FALLBACK = 0  # the classical fallback segmenter (cfg.fallback == "sauvola")
    MODEL1 = 1
    MODEL2 = 2


class Reason(IntEnum):
    """The decision branch taken for a patch (see the module docstring)."""

    BOTH_SPECKLED = 0
    M2_SPECKLED = 1
    M1_SPECKLED = 2
    AGREE = 3
    INVERTED = 4
    FG_MISMATCH = 5
    DISAGREE = 6
    MODEL1_COARSE = 7


@dataclass(frozen=True, eq=False)
class Decisions:
    """Per-patch decisions for N patches.

    source: (N,) int8 :class:`Source`; flagged: (N,) bool, both models speckled (manual inspection);
    agreement: (N,) float32 fraction of identical valid pixels; speckles1, speckles2: (N,) int32
    speckle counts of model 1 and model 2; reason: (N,) int8 :class:`Reason`; mask1, mask2: (N, h, w)
    uint8 the masks decided on, to be used for the patch (speck-free under the robust rule).
    """

    source: np.ndarray
    flagged: np.ndarray
    agreement: np.ndarray
    speckles1: np.ndarray
    speckles2: np.ndarray
    reason: np.ndarray
    mask1: np.ndarray
    mask2: np.ndarray

    def __len__(self) -> int:
        return len(self.source)


@nb.njit(cache=True, parallel=True)
def _pair_stats(m1: np.ndarray, m2: np.ndarray, valid: np.ndarray, use_valid: bool) -> np.ndarray:
    """Per patch [identical, fg1, fg2, valid, edges1, edges2] counts: (N, 6) int64 (masks uint8, nonzero
    = fg); edges: valid right/down neighbour pairs whose classes differ (the masks' boundary length)."""
    n, h, w = m1.shape
    out = np.zeros((n, 6), np.int64)
    for i in nb.prange(n):
        same = 0
        f1 = 0
        f2 = 0
        nv = 0
        e1 = 0
        e2 = 0
        for y in range(h):
            for x in range(w):
                if use_valid and valid[i, y, x] == 0:
                    continue
                a = m1[i, y, x] != 0
                b = m2[i, y, x] != 0
                same += a == b
                f1 += a
                f2 += b
                nv += 1
                if x + 1 < w and (not use_valid or valid[i, y, x + 1] != 0):
                    e1 += a != (m1[i, y, x + 1] != 0)
                    e2 += b != (m2[i, y, x + 1] != 0)
                if y + 1 < h and (not use_valid or valid[i, y + 1, x] != 0):
                    e1 += a != (m1[i, y + 1, x] != 0)
                    e2 += b != (m2[i, y + 1, x] != 0)
        out[i, 0] = same
        out[i, 1] = f1
        out[i, 2] = f2
        out[i, 3] = nv
        out[i, 4] = e1
        out[i, 5] = e2
    return out


def _as_u8(a: np.ndarray) -> np.ndarray:
    """uint8 view/copy of a mask, nonzero = foreground (no copy for contiguous uint8 or bool)."""
    a = np.asarray(a)
    if a.dtype == np.bool_:
        a = a.view(np.uint8)
    elif a.dtype != np.uint8:
        a = (a != 0).view(np.uint8)
    return np.ascontiguousarray(a)


def line_width(fg: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Typical line width in pixels from foreground area and boundary length: 2 · area / edges (a line of
    length L >> width w has area w·L and boundary about 2L); inf where there is no boundary."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(edges > 0, 2.0 * fg / np.maximum(edges, 1), np.inf)


def decide(
    m1: np.ndarray,
    m2: np.ndarray,
    cfg: DecisionConfig,
    valid: np.ndarray | None = None,
    model1_scale: np.ndarray | float = 1.0,
) -> Decisions:
    """Choose model 1 or model 2 for each patch (see the module docstring for the rules).

    m1, m2: (N, h, w) uint8 {0,1} (or bool) masks of model 1 and model 2 over the same N patches;
    valid: (N, h, w) bool marking real (unpadded) pixels, or None when all are real; model1_scale:
    (N,) or scalar, image pixels per model-1 input pixel (the robust rule's trust in model 1).
    """
    if m1.shape != m2.shape or m1.ndim != 3:
        raise ValueError(f"m1 and m2 must be (N, h, w) of the same shape, got {m1.shape} and {m2.shape}")
    if valid is not None and valid.shape != m1.shape:
        raise ValueError(f"valid has shape {valid.shape}, masks have {m1.shape}")
    a = _as_u8(m1)
    b = _as_u8(m2)
    v = _as_u8(valid) if valid is not None else np.ones((1, 1, 1), np.uint8)
    full = a.shape[1] * a.shape[2]
    padded = (
        np.flatnonzero(v.reshape(len(v), -1).sum(axis=1) < full) if valid is not None else np.zeros(0, int)
    )
    sp1 = count_speckles(a, cfg.speckle_max_px)
    sp2 = count_speckles(b, cfg.speckle_max_px)
    if len(padded):  # recount patches with padding, whose speckles there do not count
        sp1[padded] = count_speckles(a[padded] & v[padded], cfg.speckle_max_px)
        sp2[padded] = count_speckles(b[padded] & v[padded], cfg.speckle_max_px)
    robust = cfg.rule == "robust"
    if robust:
        a = remove_specks(a, cfg.speckle_max_px)
        b = remove_specks(b, cfg.speckle_max_px)
    with parallel_guard():  # a parallel kernel: never entered by two threads under workqueue
        stats = _pair_stats(a, b, v, valid is not None)
    n_valid = stats[:, 3].astype(np.float64)
    denom = np.maximum(n_valid, 1.0)
    agreement = np.where(n_valid > 0, stats[:, 0] / denom, 1.0).astype(np.float32)
    frac1 = stats[:, 1] / denom
    frac2 = stats[:, 2] / denom
    speckled1 = sp1 >= cfg.speckled_min_count
    speckled2 = sp2 >= cfg.speckled_min_count
    agree = agreement >= cfg.agree_min
    inverted = agreement < 0.5
    mismatch = np.abs(frac1 - frac2) > cfg.fg_fraction_tol
    if robust:
        width = np.where(
            stats[:, 2] > 0, line_width(stats[:, 2], stats[:, 5]), line_width(stats[:, 1], stats[:, 4])
        )
        coarse = width / np.broadcast_to(np.asarray(model1_scale, np.float64), width.shape) < cfg.min_line_px
        conditions = [speckled1 & speckled2, coarse, agree, inverted, mismatch]
        reasons = [
            Reason.BOTH_SPECKLED,
            Reason.MODEL1_COARSE,
            Reason.AGREE,
            Reason.INVERTED,
            Reason.FG_MISMATCH,
        ]
    else:
        conditions = [speckled1 & speckled2, speckled2, speckled1, agree, inverted, mismatch]
        reasons = [
            Reason.BOTH_SPECKLED,
            Reason.M2_SPECKLED,
            Reason.M1_SPECKLED,
            Reason.AGREE,
            Reason.INVERTED,
            Reason.FG_MISMATCH,
        ]
    reason = np.select(conditions, reasons, default=Reason.DISAGREE).astype(np.int8)

    fallback_source = {"sauvola": Source.FALLBACK, "model1": Source.MODEL1, "model2": Source.MODEL2}[
        cfg.fallback
    ]
    to_model1 = np.isin(reason, [Reason.M2_SPECKLED, Reason.INVERTED, Reason.FG_MISMATCH])
    source = np.where(to_model1, Source.MODEL1, Source.MODEL2).astype(np.int8)
    flagged = reason == Reason.BOTH_SPECKLED
    source[flagged] = fallback_source
    return Decisions(
        source=source,
        flagged=flagged,
        agreement=agreement,
        speckles1=sp1,
        speckles2=sp2,
        reason=reason,
        mask1=a,
        mask2=b,
    )
