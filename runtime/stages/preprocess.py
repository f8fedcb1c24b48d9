"""Intensity normalisation and resizing shared by the pipeline and training.

SEM images arrive as 8- or 16-bit data that often use only part of their range, so intensities are
mapped to [0, 1] by robust percentiles computed once per image (on a strided subsample, so a
16k x 16k image costs no full-size temporary) and then applied to any crop of that image.

Glare: vias (and other small saturated spots) form a bright tail far above the metal. Mapped as they
are, the lines end up mid-grey beside white vias and a model cuts every via off its line (on
renderings of the held-out layout the default model made 318 opens on 741 lines this way). When the
tail is longer than :data:`GLARE_TAIL` times the metal-to-background spread (p90 - p50), the high level
is lowered to p90 + :data:`GLARE_MARGIN` (p90 - p50), so lines and vias are equally bright.

Background flattening: charging, shading and show-through add low-frequency brightness that shifts
whole regions towards the metal level. :func:`estimate_background` finds the background by a
morphological opening (closing for dark metal) wider than the widest line at 1/:data:`FLATTEN_FACTOR`
resolution; :meth:`Background.flatten` subtracts it from one crop at a time (the levels' subsample, the
whole-image input, each patch), so a flattened full-size image never exists.

Polarity: where the metal is darker than the background (some backscatter images), the levels are
found the same way on the negated intensities and returned in the order (background, metal), so that
:func:`apply_range` maps the background to 0 and the metal to 1: every later stage sees bright metal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numba as nb
import numpy as np

_SUBSAMPLE_TARGET = 1 << 20  # about one million pixels are enough for stable percentiles
GLARE_TAIL = 2.0  # a bright tail (high - p90) longer than this many (p90 - p50) is glare
GLARE_MARGIN = 0.6  # then the high level becomes p90 + GLARE_MARGIN * (p90 - p50)
FLATTEN_FACTOR = 8  # the background is estimated at 1/FLATTEN_FACTOR resolution
MAX_DISK = 65  # widest disk (px of its subsample) of the opening: windows up to 527 px keep 1/8


def intensity_range(
    image: np.ndarray,
    low_pct: float = 0.5,
    high_pct: float = 99.5,
    clip_glare: bool = True,
    dark_metal: bool = False,
    background: Background | None = None,
) -> tuple[float, float]:
    """Robust (background, metal) intensity levels of ``image`` (H, W) uint8/uint16.

    Returns the two percentiles of a strided subsample, the metal one moved towards the metal where
    ``clip_glare`` finds a glare tail (see the module docstring); they differ by at least 1 (a flat
    image gets ``metal = background + 1``). ``dark_metal``: the metal is the dark end, the first level
    is then the higher one. With a ``background`` the subsample is flattened first.
    """
    h, w = image.shape[:2]
    step = max(1, int(np.sqrt(h * w / _SUBSAMPLE_TARGET)))
    sample = image[::step, ::step]
    if background is not None:
        sample = background.flatten(sample)
    if dark_metal:
        sample = -sample.astype(np.float32)
    lo, hi, p50, p90 = (float(v) for v in np.percentile(sample, [low_pct, high_pct, 50, 90]))
    if clip_glare and p90 > p50 and hi - p90 > GLARE_TAIL * (p90 - p50):
        hi = p90 + GLARE_MARGIN * (p90 - p50)
    if hi <= lo:
        hi = lo + 1.0
    return (-lo, -hi) if dark_metal else (lo, hi)


@nb.njit(cache=True, nogil=True)
def _map_range(image: np.ndarray, lo: np.float32, scale: np.float32, out: np.ndarray) -> None:
    """out = clip((float32(image) - lo) * scale, 0, 1) for (H, W) integer image, in one pass."""
    for y in range(image.shape[0]):
        for x in range(image.shape[1]):
            v = (np.float32(image[y, x]) - lo) * scale
            out[y, x] = np.float32(0.0) if v < 0 else np.float32(1.0) if v > 1 else v


def apply_range(image: np.ndarray, levels: tuple[float, float]) -> np.ndarray:
    """Map ``image`` (any shape, integer or float) linearly so ``levels`` become 0 and 1; clip; float32
    (levels in falling order invert the image).

    The float32 operations are (float32(x) - float32(low)) * float32(1 / (high - low)), then the clip;
    (H, W) uint8/uint16 images take one fused pass with the very same operations.
    """
    lo, hi = levels
    lo32, scale = np.float32(lo), np.float32(1.0 / (hi - lo))
    if image.ndim == 2 and image.dtype in (np.uint8, np.uint16):
        mapped = np.empty(image.shape, np.float32)
        _map_range(image, lo32, scale, mapped)
        return mapped
    out = (image.astype(np.float32) - lo32) * scale
    return np.clip(out, 0.0, 1.0, out=out)


def resize_square(image: np.ndarray, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """Resize (H, W) to (size, size): area averaging when shrinking, bilinear when enlarging.

    Written into ``out`` ((size, size), the image's dtype) when given; else the image itself is
    returned when it already has the size.
    """
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        if out is None:
            return image
        out[...] = image
        return out
    shrink = size * size < h * w
    mode = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    if out is None:
        return cv2.resize(image, (size, size), interpolation=mode)
    return cv2.resize(image, (size, size), dst=out, interpolation=mode)


def resize_region(prob: np.ndarray, full_shape: tuple[int, int], box: np.ndarray) -> np.ndarray:
    """Bilinearly upsample ``prob`` (h, w) to ``full_shape`` (H, W), but only inside ``box``.

    box: [y0, x0, y1, x1] in full-resolution pixels; pixel-centre convention of ``cv2.resize``
    (src = (dst + 0.5) * scale - 0.5, edges replicated), so tiling a full resize into boxes never
    allocates (H, W) floats. The values are those of :func:`upsample_at`, bit for bit what the
    device-resident stages compute (a probability on the threshold decides the same on both paths).
    Returns (y1 - y0, x1 - x0) float32.
    """
    y0, x0, y1, x1 = (int(v) for v in box)
    return upsample_at(prob, full_shape, np.arange(y0, y1), np.arange(x0, x1))


@nb.njit(cache=True, nogil=True)
def _lerp_rows(across: np.ndarray, r0: np.ndarray, r1: np.ndarray, fy: np.ndarray, out: np.ndarray) -> None:
    """out[y] = across[r0[y]] * (1 - fy[y]) + across[r1[y]] * fy[y], float32 (no fused multiply-add)."""
    one = np.float32(1.0)
    for y in range(out.shape[0]):
        a, b, f = r0[y], r1[y], fy[y]
        g = one - f
        for x in range(out.shape[1]):
            out[y, x] = across[a, x] * g + across[b, x] * f


def _separable_taps(
    src: np.ndarray, full_shape: tuple[int, int], rows: np.ndarray, cols: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``src`` (h, w) resampled along x at ``cols`` of ``full_shape`` for the rows of ``src`` that
    ``rows`` need, (n, len(cols)) float32, and per row of ``rows`` its two rows of that array and the
    weight of the second."""
    h, w = src.shape
    y0, y1, fy = bilinear_taps(rows, h, full_shape[0])
    x0, x1, fx = bilinear_taps(cols, w, full_shape[1])
    needed = np.unique(np.concatenate([y0, y1]))
    part = np.asarray(src[needed], np.float32)
    across = part[:, x0] * (1 - fx) + part[:, x1] * fx
    return np.ascontiguousarray(across), np.searchsorted(needed, y0), np.searchsorted(needed, y1), fy


def upsample_at(
    src: np.ndarray, full_shape: tuple[int, int], rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """``src`` (h, w) bilinearly resampled to ``full_shape`` (H, W), at pixels ``rows`` x ``cols`` (int
    arrays): (len(rows), len(cols)) float32, separably (along x, then y) with the very float32
    operations of the device-resident stages (:mod:`samsem.runtime.stages.tensors`), so both paths agree
    exactly."""
    across, r0, r1, fy = _separable_taps(src, full_shape, rows, cols)
    out = np.empty((len(rows), len(cols)), np.float32)
    _lerp_rows(across, r0, r1, fy, out)
    return out


@nb.njit(cache=True, nogil=True)
def _flatten_map_range(
    pixels: np.ndarray,
    across: np.ndarray,
    r0: np.ndarray,
    r1: np.ndarray,
    fy: np.ndarray,
    level: np.float32,
    lo: np.float32,
    scale: np.float32,
    out: np.ndarray,
) -> None:
    """out = clip(((float32(pixels) - background) + level - lo) * scale, 0, 1), the background row y
    being across[r0[y]] * (1 - fy[y]) + across[r1[y]] * fy[y] (Background.map_range)."""
    one = np.float32(1.0)
    for y in range(pixels.shape[0]):
        a, b, f = r0[y], r1[y], fy[y]
        g = one - f
        for x in range(pixels.shape[1]):
            v = (np.float32(pixels[y, x]) - (across[a, x] * g + across[b, x] * f)) + level
            v = (v - lo) * scale
            out[y, x] = np.float32(0.0) if v < 0 else np.float32(1.0) if v > 1 else v


def bilinear_taps(pix: np.ndarray, n: int, N: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices i0, i1 (int64) and weight (float32) of destination pixels ``pix`` (any shape) when
    ``n`` samples are bilinearly resampled to ``N`` (pixel-centre convention, edges replicated)."""
    src = (pix.astype(np.float32) + np.float32(0.5)) * np.float32(n / N) - np.float32(0.5)
    base = np.floor(src)
    frac = (src - base).astype(np.float32)
    return np.clip(base, 0, n - 1).astype(np.int64), np.clip(base + 1, 0, n - 1).astype(np.int64), frac


@dataclass(frozen=True)
class Background:
    """A low-frequency background estimate of one image: ``map`` (h, w) float32 spans the whole image at
    a lower resolution; flattened pixels are the image minus the map plus ``level`` (the map's median,
    so intensities stay where they were on average)."""

    map: np.ndarray
    level: float

    def sample(self, full_shape: tuple[int, int], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The map bilinearly upsampled to ``full_shape`` (H, W), at pixels ``rows`` x ``cols``:
        :func:`upsample_at` of the map."""
        return upsample_at(self.map, full_shape, rows, cols)

    def map_range(
        self,
        pixels: np.ndarray,
        rows: np.ndarray,
        cols: np.ndarray,
        full_shape: tuple[int, int],
        levels: tuple[float, float],
    ) -> np.ndarray:
        """``apply_range(self.flatten(pixels, rows, cols, full_shape), levels)`` in one pass, bit for bit
        (the same float32 operations): (len(rows), len(cols)) float32 in [0, 1]."""
        across, r0, r1, fy = _separable_taps(self.map, full_shape, rows, cols)
        lo, hi = levels
        out = np.empty(pixels.shape, np.float32)
        level, lo32, scale = np.float32(self.level), np.float32(lo), np.float32(1.0 / (hi - lo))
        _flatten_map_range(pixels, across, r0, r1, fy, level, lo32, scale, out)
        return out

    def flatten(
        self,
        pixels: np.ndarray,
        rows: np.ndarray | None = None,
        cols: np.ndarray | None = None,
        full_shape: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """``pixels`` minus the map plus ``level``: float32 of the same shape.

        ``pixels`` (len(rows), len(cols)) are the pixels at ``rows`` x ``cols`` of an image of
        ``full_shape``; without those, ``pixels`` (h, w) is a whole image at any resolution.
        """
        if full_shape is None:
            full_shape = pixels.shape
            rows, cols = np.arange(full_shape[0]), np.arange(full_shape[1])
        assert rows is not None and cols is not None
        out = pixels.astype(np.float32)
        out -= self.sample(full_shape, rows, cols)
        out += np.float32(self.level)
        return out


def flatten_window(window: int, height: int, width: int) -> int:
    """The background window (px) an image of ``height`` x ``width`` can use: ``window`` up to the
    narrowest window whose disk spans the whole 1/:data:`FLATTEN_FACTOR` subsample; every wider window
    gives the same background (the subsample's minimum, or maximum for dark metal). 0 (off) stays 0."""
    if window <= 0:
        return 0
    sub = (-(-height // FLATTEN_FACTOR), -(-width // FLATTEN_FACTOR))
    return min(window, FLATTEN_FACTOR * (2 * math.ceil(math.hypot(*sub)) + 1))


def estimate_background(image: np.ndarray, window: int, dark_metal: bool = False) -> Background | None:
    """The :class:`Background` of ``image`` (H, W) uint8/uint16, or None when ``window`` <= 0 (off).

    An opening (``dark_metal``: a closing) with a disk of ``window`` px of the image area-downsampled
    :data:`FLATTEN_FACTOR` times, then a Gaussian blur of half the disk's size; the map is
    (ceil(H/8), ceil(W/8)). The cost is bounded by the image, whatever the window: the window is first
    cut to :func:`flatten_window` (a disk across the whole subsample is its minimum everywhere, made
    without an opening), and a disk wider than :data:`MAX_DISK` px opens a subsample coarser by powers
    of 2 instead, where the disk is at most that wide.
    """
    window = flatten_window(window, *image.shape)
    if window <= 0:
        return None
    h, w = image.shape
    size = (-(-w // FLATTEN_FACTOR), -(-h // FLATTEN_FACTOR))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    if window == flatten_window(1 << 62, h, w):  # the disk spans the subsample
        level = float(small.max() if dark_metal else small.min())
        return Background(np.full(small.shape, level, np.float32), level)
    factor = FLATTEN_FACTOR
    while (max(3, window // factor) | 1) > MAX_DISK:
        factor *= 2
    if factor > FLATTEN_FACTOR:
        coarse = (-(-w // factor), -(-h // factor))
        small = cv2.resize(small, coarse, interpolation=cv2.INTER_AREA).astype(np.float32, copy=False)
    k = max(3, window // factor) | 1
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    opened = cv2.morphologyEx(small, cv2.MORPH_CLOSE if dark_metal else cv2.MORPH_OPEN, disk)
    background = cv2.GaussianBlur(opened, (0, 0), k / 2)
    return Background(background, float(np.median(background)))
