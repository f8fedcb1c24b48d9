"""Classical segmenters: global (Otsu) threshold with smoothing and morphology, and Sauvola.

They implement the :class:`~samsem.runtime.models.segmenter.Segmenter` protocol, so the pipeline can run
without a model, and Sauvola stands in for patches whose model masks both fail the quality checks
(the SegSEM fallback).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from samsem.errors import ConfigError

METHODS = ("otsu", "sauvola")


@dataclass(frozen=True)
class ClassicalConfig:
    """Parameters of the classical segmenters (pixel sizes at the segmenter's input resolution)."""

    method: str = "sauvola"
    median_ksize: int = 0  # median filter before smoothing (odd side, 0 = off)
    blur_sigma: float = 1.0  # Gaussian smoothing before thresholding (0 = off)
    sauvola_window: int = 31  # odd side of the local window
    sauvola_k: float = 0.2
    sauvola_r: float = 0.5  # dynamic range of the standard deviation for [0, 1] images
    min_std: float = 0.02  # Sauvola: windows flatter than this use the global mid-level instead
    morph_radius: int = 1  # opening then closing with a disk of this radius (0 = off)
    min_object_px: int = 16  # foreground components smaller than this are removed

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(
                f"unknown classical method {self.method!r}; expected one of {', '.join(METHODS)}"
            )
        if self.median_ksize and (self.median_ksize < 3 or self.median_ksize % 2 == 0):
            raise ConfigError(f"median_ksize must be 0 or an odd number >= 3, got {self.median_ksize}")
        if self.sauvola_window < 3 or self.sauvola_window % 2 == 0:
            raise ConfigError(f"sauvola_window must be an odd number >= 3, got {self.sauvola_window}")


def _smooth(image: np.ndarray, cfg: ClassicalConfig) -> np.ndarray:
    """Median (on 8-bit levels, as OpenCV needs for large kernels), then Gaussian smoothing."""
    if cfg.median_ksize:
        image = (
            cv2.medianBlur(np.round(image * 255).astype(np.uint8), cfg.median_ksize).astype(np.float32) / 255
        )
    return cv2.GaussianBlur(image, (0, 0), cfg.blur_sigma) if cfg.blur_sigma > 0 else image


def otsu_mask(image: np.ndarray, cfg: ClassicalConfig) -> np.ndarray:
    """Global threshold: image (H, W) float32 in [0, 1] -> (H, W) uint8 {0, 1} (before clean-up)."""
    img8 = np.round(_smooth(image, cfg) * 255).astype(np.uint8)
    if int(img8.max()) == int(img8.min()):
        return np.zeros(image.shape, np.uint8)
    _, mask = cv2.threshold(img8, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return mask


def sauvola_mask(image: np.ndarray, cfg: ClassicalConfig) -> np.ndarray:
    """Sauvola adaptive threshold T = m * (1 + k * (s / R - 1)) over a square window.

    image (H, W) float32 in [0, 1] -> (H, W) uint8 {0, 1} (before clean-up). Local mean m and standard
    deviation s come from box filters (integral images), so cost is independent of the window.
    Windows whose standard deviation is below ``min_std`` hold no edge; there the pixel is compared with
    the middle of the normalised range (0.5), so the inside of wide rails and pads stays metal.
    """
    img = _smooth(image.astype(np.float32, copy=False), cfg)
    win = (cfg.sauvola_window, cfg.sauvola_window)
    mean = cv2.boxFilter(img, cv2.CV_32F, win, borderType=cv2.BORDER_REFLECT)
    sq = cv2.boxFilter(img * img, cv2.CV_32F, win, borderType=cv2.BORDER_REFLECT)
    std = np.sqrt(np.maximum(sq - mean * mean, 0.0))
    thresh = mean * (1.0 + cfg.sauvola_k * (std / cfg.sauvola_r - 1.0))
    flat = std < cfg.min_std
    return np.where(flat, img > 0.5, img > thresh).astype(np.uint8)


def clean_mask(mask: np.ndarray, radius: int, min_object_px: int) -> np.ndarray:
    """Light morphology (opening, closing) and removal of components < ``min_object_px``; (H, W) uint8."""
    if radius > 0:
        disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, disk)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, disk)
    if min_object_px > 1:
        _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        keep = stats[:, cv2.CC_STAT_AREA] >= min_object_px
        keep[0] = False
        mask = keep[labels].astype(np.uint8)
    return mask


def classical_segment(image: np.ndarray, cfg: ClassicalConfig) -> np.ndarray:
    """Segment one image (H, W) float32 in [0, 1] -> (H, W) uint8 {0, 1} with ``cfg.method``."""
    raw = otsu_mask(image, cfg) if cfg.method == "otsu" else sauvola_mask(image, cfg)
    return clean_mask(raw, cfg.morph_radius, cfg.min_object_px)


class ClassicalSegmenter:
    """Segmenter protocol over :func:`classical_segment`; masks come back as 0/1 probabilities."""

    uses_prompts = False

    def __init__(self, cfg: ClassicalConfig | None = None, input_size: int = 512) -> None:
        self.cfg = cfg or ClassicalConfig()
        self.input_size = input_size

    def predict(self, images: np.ndarray, points: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """images (B, S, S) float32 [0, 1] -> (probs (B, S, S) float32 {0, 1}, scores (B,) ones)."""
        probs = np.stack([classical_segment(img, self.cfg) for img in images]).astype(np.float32)
        return probs, np.ones(len(images), np.float32)
