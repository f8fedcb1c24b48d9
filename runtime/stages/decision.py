"""Per-patch choice between model 1 (whole image) and model 2 (patches), following the SAMSEM paper.

For each 512-px patch, both models' masks over that patch are compared (``valid`` pixels only):

* a mask is *speckled* when it has ``>= speckled_min_count`` speckles (8-connected components of
  ``<= speckle_max_px`` pixels), counted after clearing padded pixels;
* the masks *agree* when the fraction of identical pixels is ``>= agree_min``.

Branches, in order (``Reason`` names the branch in reports):

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

Fractions and agreement count only ``valid`` pixels (real image pixels, not padding); a patch with no
valid pixel counts as agreeing (agreement 1, both fractions 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numba as nb
import numpy as np

from samsem.errors import ConfigError
from samsem.runtime.stages.speckle import count_speckles

FALLBACKS = ("model1", "model2", "sauvola")


@dataclass(frozen=True)
class DecisionConfig:
    """Thresholds of the per-patch decision (paper defaults; ``fg_fraction_tol`` is ours, see module doc)."""

    speckle_max_px: int = 16
    speckled_min_count: int = 50
    agree_min: float = 0.60
    fg_fraction_tol: float = 0.25
    fallback: str = "sauvola"

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


@dataclass(frozen=True, eq=False)
class Decisions:
    """Per-patch decisions for N patches.

    source: (N,) int8 :class:`Source`; flagged: (N,) bool, both models speckled (manual inspection);
    agreement: (N,) float32 fraction of identical valid pixels; speckles1, speckles2: (N,) int32
    speckle counts of model 1 and model 2; reason: (N,) int8 :class:`Reason`.
    """

    source: np.ndarray
    flagged: np.ndarray
    agreement: np.ndarray
    speckles1: np.ndarray
    speckles2: np.ndarray
    reason: np.ndarray

    def __len__(self) -> int:
        return len(self.source)


@nb.njit(cache=True, parallel=True)
def _pair_stats(m1: np.ndarray, m2: np.ndarray, valid: np.ndarray, use_valid: bool) -> np.ndarray:
    """Per patch [identical, fg1, fg2, valid] pixel counts: (N, 4) int64 (masks uint8, nonzero = fg)."""
    n, h, w = m1.shape
    out = np.zeros((n, 4), np.int64)
    for i in nb.prange(n):
        same = 0
        f1 = 0
        f2 = 0
        nv = 0
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
        out[i, 0] = same
        out[i, 1] = f1
        out[i, 2] = f2
        out[i, 3] = nv
    return out


def _as_u8(a: np.ndarray) -> np.ndarray:
    """uint8 view/copy of a mask, nonzero = foreground (no copy for contiguous uint8 or bool)."""
    a = np.asarray(a)
    if a.dtype == np.bool_:
        a = a.view(np.uint8)
    elif a.dtype != np.uint8:
        a = (a != 0).view(np.uint8)
    return np.ascontiguousarray(a)


def decide(m1: np.ndarray, m2: np.ndarray, cfg: DecisionConfig, valid: np.ndarray | None = None) -> Decisions:
    """Choose model 1 or model 2 for each patch.

    m1, m2: (N, h, w) uint8 {0,1} (or bool) masks of model 1 and model 2 over the same N patches;
    valid: (N, h, w) bool marking real (unpadded) pixels, or None when all are real.
    """
    if m1.shape != m2.shape or m1.ndim != 3:
        raise ValueError(f"m1 and m2 must be (N, h, w) of the same shape, got {m1.shape} and {m2.shape}")
    if valid is not None and valid.shape != m1.shape:
        raise ValueError(f"valid has shape {valid.shape}, masks have {m1.shape}")
    a = _as_u8(m1)
    b = _as_u8(m2)
    if valid is not None:
        v = _as_u8(valid)
        stats = _pair_stats(a, b, v, True)
        padded = np.flatnonzero(stats[:, 3] < a.shape[1] * a.shape[2])
    else:
        stats = _pair_stats(a, b, np.ones((1, 1, 1), np.uint8), False)
        padded = np.zeros(0, np.int64)
    n_valid = stats[:, 3].astype(np.float64)
    denom = np.maximum(n_valid, 1.0)
    agreement = np.where(n_valid > 0, stats[:, 0] / denom, 1.0).astype(np.float32)
    frac1 = stats[:, 1] / denom
    frac2 = stats[:, 2] / denom

    sp1 = count_speckles(a, cfg.speckle_max_px)
    sp2 = count_speckles(b, cfg.speckle_max_px)
    if padded.size:  # recount patches with padding, whose speckles there do not count
        sp1[padded] = count_speckles(a[padded] & v[padded], cfg.speckle_max_px)
        sp2[padded] = count_speckles(b[padded] & v[padded], cfg.speckle_max_px)
    speckled1 = sp1 >= cfg.speckled_min_count
    speckled2 = sp2 >= cfg.speckled_min_count
    agree = agreement >= cfg.agree_min

    reason = np.select(
        [
            speckled1 & speckled2,
            speckled2,
            speckled1,
            agree,
            agreement < 0.5,
            np.abs(frac1 - frac2) > cfg.fg_fraction_tol,
        ],
        [
            Reason.BOTH_SPECKLED,
            Reason.M2_SPECKLED,
            Reason.M1_SPECKLED,
            Reason.AGREE,
            Reason.INVERTED,
            Reason.FG_MISMATCH,
        ],
        default=Reason.DISAGREE,
    ).astype(np.int8)

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
    )
