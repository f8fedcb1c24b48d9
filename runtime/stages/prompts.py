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
from samsem.evaluation.components import link_runs, scan_runs, word_view


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


@nb.njit(cache=True, nogil=True)
def _histogram(u8: np.ndarray) -> np.ndarray:
    """(256,) int64 counts of the values of ``u8`` (H, W) uint8."""
    hist = np.zeros(256, np.int64)
    for y in range(u8.shape[0]):
        for x in range(u8.shape[1]):
            hist[u8[y, x]] += 1
    return hist


@nb.njit(cache=True, nogil=True)
def _otsu(hist: np.ndarray) -> int:
    """Otsu's threshold of a 256-bin histogram, operation for operation as OpenCV's THRESH_OTSU for 8-bit
    images (double precision, FLT_EPSILON guards, the first maximum wins), so the level is identical."""
    n = 0
    for i in range(256):
        n += hist[i]
    scale = 1.0 / n
    mu = 0.0
    for i in range(256):
        mu += i * float(hist[i])
    mu *= scale
    mu1 = 0.0
    q1 = 0.0
    max_sigma = 0.0
    max_val = 0
    eps = 1.1920928955078125e-07  # FLT_EPSILON
    for i in range(256):
        p_i = hist[i] * scale
        mu1 *= q1
        q1 += p_i
        q2 = 1.0 - q1
        if min(q1, q2) < eps or max(q1, q2) > 1.0 - eps:
            continue
        mu1 = (mu1 + i * p_i) / q1
        mu2 = (mu - q1 * mu1) / q2
        sigma = q1 * q2 * (mu1 - mu2) * (mu1 - mu2)
        if sigma > max_sigma:
            max_sigma = sigma
            max_val = i
    return max_val


NO_LEVEL = 256  # foreground_levels' answer for a patch without candidate foreground


def foreground_levels(hists: np.ndarray, cfg: PromptConfig) -> np.ndarray:
    """Step 2 and 3 of the module docstring from each input's histogram of denoised uint8 levels.

    hists: (B, 256) int64. Returns (B,) int64: keep pixels ``>= level``; :data:`NO_LEVEL` for a flat
    input or one whose level would exceed 255. The standard deviation is computed from the histogram in
    double precision (the population standard deviation ``cv2.meanStdDev`` gives); shared by the numpy
    and the torch prompt stages, so both take the same levels.
    """
    hists = np.ascontiguousarray(hists, np.int64).reshape(-1, 256)
    out = np.empty(len(hists), np.int64)
    for i in range(len(hists)):
        out[i] = _level(hists[i], float(cfg.min_contrast), float(cfg.bright_quantile))
    return out


@nb.njit(cache=True, nogil=True)
def _level(hist: np.ndarray, min_contrast: float, quantile: float) -> int:
    """:func:`foreground_levels` of one histogram. The moments are sums of integers below 2**53, exact
    in float64 in any order, so the standard deviation is the one ``cv2.meanStdDev`` computes."""
    n = 0
    s1 = 0.0
    s2 = 0.0
    for v in range(256):
        n += hist[v]
        s1 += float(v * hist[v])
        s2 += float(v * v * hist[v])
    if n == 0:
        return NO_LEVEL
    mean = s1 / n
    std = np.sqrt(max(s2 / n - mean * mean, 0.0))
    if std / 255.0 < min_contrast:
        return NO_LEVEL
    target = quantile * n
    quant = 256
    cum = 0
    for v in range(256):
        cum += hist[v]
        if cum >= target:
            quant = v
            break
    return min(max(_otsu(hist) + 1, quant), NO_LEVEL)


def min_object_px(cfg: PromptConfig, n_pixels: int) -> int:
    """Smallest kept object at an input of ``n_pixels`` pixels (``min_object_px`` scaled by area)."""
    return round(cfg.min_object_px * n_pixels / cfg.reference_size**2)


@nb.njit(cache=True, nogil=True)
def _kept_runs(mask: np.ndarray, words: np.ndarray, min_px: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs (row, start, end), in raster order, of the 8-connected components of ``mask`` (H, W) uint8
    with ``>= min_px`` pixels (``words``: its uint64 view for skipping 8 pixels at a time, or NO_WORDS)."""
    cap = max(mask.shape[0] * ((mask.shape[1] + 1) // 2), 1)  # most runs an H x W mask can have
    rows = np.empty(cap, np.int32)
    starts = np.empty(cap, np.int32)
    ends = np.empty(cap, np.int32)
    labels = np.empty(cap, np.int64)
    n_runs = scan_runs(mask, words, rows, starts, ends)
    n_comp = link_runs(rows, starts, ends, labels, n_runs, True)
    sizes = np.zeros(n_comp + 1, np.int64)
    for r in range(n_runs):
        sizes[labels[r]] += ends[r] - starts[r]
    n = 0
    for r in range(n_runs):
        if sizes[labels[r]] >= min_px:
            rows[n] = rows[r]
            starts[n] = starts[r]
            ends[n] = ends[r]
            n += 1
    return rows[:n], starts[:n], ends[:n]


def _foreground_runs(image: np.ndarray, cfg: PromptConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate foreground of ``image`` (S, S) float32 as runs (row, start, end) in raster order."""
    if image.ndim != 2:
        raise InputError(None, f"prompt image must be 2-D, got shape {image.shape}", "(S, S)")
    u8 = _to_u8(image)
    if cfg.denoise_ksize > 1:
        u8 = cv2.medianBlur(u8, cfg.denoise_ksize)
    (level,) = foreground_levels(_histogram(u8)[None], cfg)
    if level >= NO_LEVEL:
        empty = np.zeros(0, np.int32)
        return empty, empty, empty
    _, fg = cv2.threshold(u8, int(level) - 1, 1, cv2.THRESH_BINARY)
    if cfg.morph_radius > 0:
        d = 2 * cfg.morph_radius + 1
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (d, d)))
    fg = np.ascontiguousarray(fg)
    return _kept_runs(fg, word_view(fg), max(min_object_px(cfg, u8.size), 1))


def candidate_foreground(image: np.ndarray, cfg: PromptConfig) -> np.ndarray:
    """Pixels that are metal with high confidence.

    image: (S, S) float32 in [0, 1]. Returns (S, S) bool, all False for a flat patch.
    """
    rows, starts, ends = _foreground_runs(image, cfg)
    out = np.zeros(image.shape, bool)
    for y, x0, x1 in zip(rows.tolist(), starts.tolist(), ends.tolist(), strict=True):
        out[y, x0:x1] = True
    return out


def pick_ranks(count: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Ranks (in raster order) of the ``n`` foreground pixels drawn out of ``count``: (n,) int64,
    distinct unless ``count < n``; (0,) when ``count`` is 0. The one draw both prompt stages make."""
    if count == 0:
        return np.zeros(0, np.int64)
    return np.asarray(rng.choice(count, size=n, replace=count < n), np.int64)


def _points_from_runs(
    rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """(n, 2) float32 (x, y) of foreground pixels drawn like :func:`sample_points` from runs."""
    ranks = pick_ranks(int((ends - starts).sum()), n, rng)
    if ranks.size == 0:
        return np.zeros((0, 2), np.float32)
    return _locate(rows, starts, ends, ranks)


@nb.njit(cache=True, nogil=True)
def _locate(rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """(n, 2) float32 (x, y) of the pixels of raster rank ``ranks`` in the runs (row, start, end)."""
    out = np.empty((ranks.shape[0], 2), np.float32)
    for k in range(ranks.shape[0]):
        left = ranks[k]
        for r in range(rows.shape[0]):
            length = ends[r] - starts[r]
            if left < length:
                out[k, 0] = starts[r] + left
                out[k, 1] = rows[r]
                break
            left -= length
    return out


def sample_points(fg: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` foreground pixels of ``fg`` (S, S) bool uniformly.

    Returns (n, 2) float32 ``(x, y)`` pixel indices, distinct unless ``fg`` has fewer than ``n`` pixels
    (then drawn with replacement); (0, 2) when ``fg`` is empty.
    """
    idx = np.flatnonzero(fg)
    ranks = pick_ranks(idx.size, n, rng)
    if ranks.size == 0:
        return np.zeros((0, 2), np.float32)
    y, x = np.divmod(idx[ranks], fg.shape[1])
    return np.stack([x, y], axis=1).astype(np.float32)


def to_input_coords(points: np.ndarray, shape: tuple[int, int], size: int) -> np.ndarray:
    """Point prompts found on an (h, w) image mapped to the (size, size) model input it is resized to.

    points: (..., 2) float32 (x, y) pixel indices; pixel centres map to pixel centres
    (``(p + 0.5) * size / side - 0.5``). Returns the same shape, float32.
    """
    h, w = shape
    scale = np.array([size / w, size / h], np.float64)
    return ((points.astype(np.float64) + 0.5) * scale - 0.5).astype(np.float32)


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
        rows, starts, ends = _foreground_runs(images[i], cfg)
        pts = _points_from_runs(rows, starts, ends, cfg.n_points, np.random.default_rng(seeds[i]))
        if len(pts):
            points[i] = pts
            has_fg[i] = True
    return points, has_fg
