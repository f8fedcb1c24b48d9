"""Patch grid for model 2: square patches cut from the full image with a guaranteed overlap.

Along each axis of length L the patches of side P start at evenly spread offsets; the first is flush
with the top/left border, the last with the bottom/right one, so every pixel is covered. With
``m = ceil(min_overlap * P)`` the smallest overlap in whole pixels, the largest allowed step is
``P - m`` and the count is ``n = ceil((L - P) / (P - m)) + 1`` (``n = 1`` when ``L <= P``); the starts
are ``linspace(0, L - P, n)`` rounded half up in exact integer arithmetic. Rounding moves a step to at
most ``ceil((L - P) / (n - 1)) <= P - m``, so neighbouring patches always share at least ``m`` pixels
(e.g. 10000 px with P=512 and 10 % overlap: 22 patches per axis, 484 in all).

Ownership (used by :mod:`samsem.runtime.stages.stitch`): every pixel belongs to exactly one patch, the one
whose centre is nearest. The grid is a product of the two axes, so this separates per axis: the
boundary between consecutive patches lies at the midpoint of their centres, and a pixel whose centre
is exactly on that midpoint goes to the lower (upper/left) patch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from samsem.errors import ConfigError, InputError


@dataclass(frozen=True)
class TilingConfig:
    """How model 2's patches are laid out.

    patch_size: side of a square patch in image pixels; min_overlap: fraction of ``patch_size`` that
    neighbouring patches share at least, in ``[0, 1)``.
    """

    patch_size: int = 512
    min_overlap: float = 0.10

    def __post_init__(self) -> None:
        if not isinstance(self.patch_size, int | np.integer) or self.patch_size <= 0:
            raise ConfigError(f"patch_size must be a positive integer, got {self.patch_size!r}")
        if not 0.0 <= self.min_overlap < 1.0:
            raise ConfigError(f"min_overlap must be in [0, 1), got {self.min_overlap!r}")
        if _min_overlap_px(self.patch_size, self.min_overlap) >= self.patch_size:
            raise ConfigError(
                f"min_overlap={self.min_overlap} leaves no step between patches of {self.patch_size} px"
            )


def _min_overlap_px(patch: int, min_overlap: float) -> int:
    # the 1e-9 keeps e.g. 0.25 * 512 = 128 at 128 despite float noise
    return math.ceil(min_overlap * patch - 1e-9)


def axis_starts(length: int, patch: int, min_overlap: float) -> np.ndarray:
    """Start offsets of the patches along one axis of ``length`` pixels: (n,) int64, increasing.

    The first start is 0; the last is ``length - patch`` (0 when ``length <= patch``).
    """
    if length <= 0:
        raise InputError(None, f"image side must be positive, got {length}")
    TilingConfig(patch, min_overlap)  # validates
    if length <= patch:
        return np.zeros(1, np.int64)
    span = length - patch
    step = patch - _min_overlap_px(patch, min_overlap)
    n = -(-span // step) + 1  # ceil division
    k = np.arange(n, dtype=np.int64)
    # round(k * span / (n - 1)) half up, in integers
    return (2 * k * span + (n - 1)) // (2 * (n - 1))


def _owned_bounds(starts: np.ndarray, patch: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis [lo, hi) of the pixels whose nearest patch centre is each patch's (ties to the lower)."""
    # pixel p (centre p + 0.5) stays with patch i while p + 0.5 <= (c_i + c_{i+1}) / 2 with
    # c_i = s_i + patch / 2, i.e. p <= (s_i + s_{i+1} + patch - 1) / 2
    cut = (starts[:-1] + starts[1:] + patch - 1) // 2 + 1
    lo = np.concatenate(([0], cut)).astype(np.int64)
    hi = np.concatenate((cut, [length])).astype(np.int64)
    return lo, hi


@dataclass(frozen=True, eq=False)
class Tiling:
    """A product grid of square patches over an image of ``height`` x ``width`` pixels.

    ys: (ny,) int64 patch starts along y; xs: (nx,) int64 starts along x. Patch ``i`` is
    ``(ys[i // nx], xs[i % nx])`` (row-major). Compared by identity (it holds arrays).
    """

    height: int
    width: int
    patch: int
    ys: np.ndarray
    xs: np.ndarray

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)

    @property
    def shape(self) -> tuple[int, int]:
        """Grid shape ``(ny, nx)``."""
        return len(self.ys), len(self.xs)

    @cached_property
    def boxes(self) -> np.ndarray:
        """(N, 4) int64 ``[y0, x0, y1, x1]`` of every patch, clipped to the image, row-major."""
        yy, xx = np.meshgrid(self.ys, self.xs, indexing="ij")
        y0, x0 = yy.ravel(), xx.ravel()
        return np.stack(
            [y0, x0, np.minimum(y0 + self.patch, self.height), np.minimum(x0 + self.patch, self.width)],
            axis=1,
        ).astype(np.int64)

    @cached_property
    def owned(self) -> np.ndarray:
        """(N, 4) int64 ``[y0, x0, y1, x1]`` of the pixels each patch owns; they partition the image."""
        ylo, yhi = _owned_bounds(self.ys, self.patch, self.height)
        xlo, xhi = _owned_bounds(self.xs, self.patch, self.width)
        ny, nx = self.shape
        return np.stack(
            [np.repeat(ylo, nx), np.tile(xlo, ny), np.repeat(yhi, nx), np.tile(xhi, ny)], axis=1
        ).astype(np.int64)


def make_tiling(height: int, width: int, cfg: TilingConfig) -> Tiling:
    """Lay out patches of ``cfg.patch_size`` over a ``height`` x ``width`` image."""
    if height <= 0 or width <= 0:
        raise InputError(None, f"image size must be positive, got {height}x{width}")
    return Tiling(
        height=int(height),
        width=int(width),
        patch=int(cfg.patch_size),
        ys=axis_starts(height, cfg.patch_size, cfg.min_overlap),
        xs=axis_starts(width, cfg.patch_size, cfg.min_overlap),
    )


def reflect_index(n: int, size: int) -> np.ndarray:
    """Indices 0..n-1 folded into 0..size-1 by mirror reflection without repeating the edge (numpy's
    ``np.pad(mode="reflect")``, reflected again as often as needed): (n,) int64."""
    i = np.arange(n, dtype=np.int64)
    if size == 1:
        return np.zeros(n, np.int64)
    m = i % (2 * size - 2)
    return np.where(m < size, m, 2 * size - 2 - m)


def extract_patch(image: np.ndarray, box: np.ndarray, patch: int) -> np.ndarray:
    """Cut ``box`` = ``[y0, x0, y1, x1]`` out of ``image`` (H, W, ...) into a (patch, patch, ...) array.

    Same dtype as ``image``; where the box is smaller than a patch (image smaller than a patch) the
    bottom/right remainder mirrors the box's content (:func:`reflect_index`), so a segmenter sees the
    image's own statistics there, not a flat block that a global threshold would take for background.
    """
    y0, x0, y1, x1 = (int(v) for v in box)
    h, w = y1 - y0, x1 - x0
    if not (0 < h <= patch and 0 < w <= patch):
        raise ValueError(f"box {[y0, x0, y1, x1]} does not fit a {patch}-px patch")
    if h == patch and w == patch:
        return image[y0:y1, x0:x1].copy()
    rows = y0 + reflect_index(patch, h)
    cols = x0 + reflect_index(patch, w)
    return image[rows[:, None], cols[None, :]]
