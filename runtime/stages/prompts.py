"""Automatic point prompts for SAM2: a few points that lie on metal with high confidence.

Metal lines are the bright structures of a delayered-IC SEM image. Per model input (S, S):

1. denoise with a ``denoise_ksize`` median filter (on the image quantised to uint8);
2. if the denoised patch's standard deviation is below ``min_contrast`` (intensity in [0, 1]), the patch
   is flat: it has no candidate foreground;
3. keep the brightest pixels aggressively: threshold at ``max(Otsu, bright_quantile quantile)``, i.e.
   above Otsu's metal/dielectric split *and* at least as bright as the ``bright_quantile`` quantile
   (about the top ``1 - bright_quantile`` of the pixels, more where many pixels share that value, e.g.
   saturated lines), so the points avoid line edges and charging halos;
4. open with a disc of radius ``morph_radius`` and drop 8-connected objects smaller than
   ``min_object_px`` (given for a ``reference_size`` input, scaled with the input area);
5. sample ``n_points`` distinct foreground pixels uniformly (with replacement only if fewer exist).

A patch without candidate foreground gets ``has_fg = False``: the pipeline does not run the model on
it and treats it as empty (all dielectric, score 0), because a flat patch has no metal to prompt. Note
that this also holds for a patch lying entirely inside a metal area wider than the patch. Its points
row is filled with the image centre so batches keep their shape.

Points are ``(x, y)`` = (column, row) pixel indices as float32: SAM2's prompt encoder itself adds the
0.5 shift to the pixel centre, so no shift is applied here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numba as nb
import numpy as np

from samsem.errors import ConfigError, InputError
from samsem.evaluation.components import count_runs, label_runs


@dataclass(frozen=True)
class PromptConfig:
    """Parameters of the prompt generator (see the module docstring for the steps).

    bright_quantile 0.8: the points come from about the brightest 20 % of the pixels, which on line
    patterns (metal typically 20-50 % of the area) is the core of the lines. min_object_px 64 at a
    1024-px input: smaller bright blobs are noise or particles, not lines. min_contrast 0.03: the std
    of a median-filtered patch of dielectric and typical SEM noise stays below it, while a single
    10-px line across a 512-px patch at 0.5 contrast gives about 0.07; when in doubt a patch is
    segmented rather than skipped, since skipping a patch with metal causes opens.
    """

    n_points: int = 5
    bright_quantile: float = 0.8
    denoise_ksize: int = 3
    min_object_px: int = 64
    morph_radius: int = 1
    min_contrast: float = 0.03
    reference_size: int = 1024

    def __post_init__(self) -> None:
        if self.n_points < 1:
            raise ConfigError(f"n_points must be >= 1, got {self.n_points}")
        if not 0.0 <= self.bright_quantile < 1.0:
            raise ConfigError(f"bright_quantile must be in [0, 1), got {self.bright_quantile}")
        if self.denoise_ksize < 1 or self.denoise_ksize % 2 == 0:
            raise ConfigError(f"denoise_ksize must be an odd number >= 1, got {self.denoise_ksize}")
        if self.min_object_px < 0:
            raise ConfigError(f"min_object_px must be >= 0, got {self.min_object_px}")
        if self.morph_radius < 0:
            raise ConfigError(f"morph_radius must be >= 0, got {self.morph_radius}")
        if self.min_contrast < 0:
            raise ConfigError(f"min_contrast must be >= 0, got {self.min_contrast}")
        if self.reference_size < 1:
            raise ConfigError(f"reference_size must be >= 1, got {self.reference_size}")


def _to_u8(image: np.ndarray) -> np.ndarray:
    """(S, S) float in [0, 1] → uint8 0..255 (rounded, saturated)."""
    return cv2.convertScaleAbs(np.ascontiguousarray(image, dtype=np.float32), alpha=255.0)


@nb.njit(cache=True)
def _drop_small_objects(mask: np.ndarray, min_px: int) -> np.ndarray:
    """(H, W) bool of the 8-connected components of ``mask`` (H, W) uint8 with ``>= min_px`` pixels."""
    cap = max(count_runs(mask), 1)
    rows = np.empty(cap, np.int32)
    starts = np.empty(cap, np.int32)
    ends = np.empty(cap, np.int32)
    labels = np.empty(cap, np.int64)
    n_runs, n_comp = label_runs(mask, rows, starts, ends, labels)
    sizes = np.zeros(n_comp + 1, np.int64)
    for r in range(n_runs):
        sizes[labels[r]] += ends[r] - starts[r]
    out = np.zeros(mask.shape, np.bool_)
    for r in range(n_runs):
        if sizes[labels[r]] >= min_px:
            out[rows[r], starts[r] : ends[r]] = True
    return out


def candidate_foreground(image: np.ndarray, cfg: PromptConfig) -> np.ndarray:
    """Pixels that are metal with high confidence.

    image: (S, S) float32 in [0, 1]. Returns (S, S) bool, all False for a flat patch.
    """
    if image.ndim != 2:
        raise InputError(None, f"prompt image must be 2-D, got shape {image.shape}", "(S, S)")
    u8 = _to_u8(image)
    if cfg.denoise_ksize > 1:
        u8 = cv2.medianBlur(u8, cfg.denoise_ksize)
    empty = np.zeros(u8.shape, bool)
    if float(cv2.meanStdDev(u8)[1][0, 0]) / 255.0 < cfg.min_contrast:
        return empty
    otsu, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    hist = cv2.calcHist([u8], [0], None, [256], [0, 256]).ravel()
    quant = int(np.searchsorted(np.cumsum(hist), cfg.bright_quantile * u8.size, side="left"))
    thr = max(int(otsu) + 1, quant)  # keep u8 >= thr
    if thr > 255:
        return empty
    _, fg = cv2.threshold(u8, thr - 1, 1, cv2.THRESH_BINARY)
    if cfg.morph_radius > 0:
        d = 2 * cfg.morph_radius + 1
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (d, d)))
    min_px = round(cfg.min_object_px * u8.size / cfg.reference_size**2)
    if min_px > 1:
        return _drop_small_objects(fg, min_px)
    return fg.astype(bool)


def sample_points(fg: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` foreground pixels of ``fg`` (S, S) bool uniformly.

    Returns (n, 2) float32 ``(x, y)`` pixel indices, distinct unless ``fg`` has fewer than ``n`` pixels
    (then drawn with replacement); (0, 2) when ``fg`` is empty.
    """
    idx = np.flatnonzero(fg)
    if idx.size == 0:
        return np.zeros((0, 2), np.float32)
    pick = idx[rng.choice(idx.size, size=n, replace=idx.size < n)]
    y, x = np.divmod(pick, fg.shape[1])
    return np.stack([x, y], axis=1).astype(np.float32)


def make_prompts(
    images: np.ndarray, cfg: PromptConfig, seeds: Sequence[int | Sequence[int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Point prompts for a batch of model inputs.

    images: (B, S, S) float32 in [0, 1]; seeds: B seeds (an int or a sequence of ints, e.g.
    ``(run_seed, patch_index)``), one per image, for :func:`numpy.random.default_rng`.
    Returns ``(points, has_fg)``: points (B, n_points, 2) float32 ``(x, y)`` pixel indices, the image
    centre where ``has_fg`` (B,) bool is False (no candidate foreground).
    """
    if images.ndim != 3:
        raise InputError(None, f"prompt images must be (B, S, S), got shape {images.shape}")
    b, s_h, s_w = images.shape
    if len(seeds) != b:
        raise ValueError(f"got {len(seeds)} seeds for {b} images")
    points = np.empty((b, cfg.n_points, 2), np.float32)
    points[..., 0] = (s_w - 1) / 2
    points[..., 1] = (s_h - 1) / 2
    has_fg = np.zeros(b, bool)
    for i in range(b):
        pts = sample_points(
            candidate_foreground(images[i], cfg), cfg.n_points, np.random.default_rng(seeds[i])
        )
        if len(pts):
            points[i] = pts
            has_fg[i] = True
    return points, has_fg
