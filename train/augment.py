"""Joint image/mask augmentation driven by one intensity ``i`` in (0, 1].

With probability ``p`` all of the following are applied, in this order, otherwise none (the sample is
only resized to the model input):

1. RandomResizedCrop to ``size`` x ``size`` with area scale in ``[0.99 - 0.5 i, 0.99]`` (aspect ratio
   log-uniform in [3/4, 4/3], as torchvision);
2. Gaussian blur, odd kernel drawn from 5, 7, 9, sigma uniform in ``[0.1, max(0.1, 5 i)]``;
3. colour jitter: brightness factor in ``[1 - 0.75 i, 1 + 0.75 i]``, then contrast factor in
   ``[1 - 0.5 i, 1 + 0.5 i]`` (blend with the mean), clipped to [0, 1];
4. vertical flip with probability ``0.5 i``; 5. horizontal flip with probability ``0.5 i``;
6. additive Gaussian noise, mean 0, sigma ``0.5 i``, clipped to [0, 1].

The mask follows every geometric step (crop, resize, flips). Parameters are drawn first
(:func:`sample_params`) and then applied (:func:`apply_params`), so a test can switch the photometric
steps off and check the geometry alone. All randomness comes from the caller's ``numpy`` Generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from samsem.runtime.stages.preprocess import resize_square
from samsem.train.config import AugmentConfig

BLUR_KERNELS = (5, 7, 9)


@dataclass(frozen=True)
class AugmentParams:
    """One draw of every augmentation parameter.

    crop: (y0, x0, h, w) in source pixels; blur_kernel 0 = no blur; brightness/contrast 1.0 = identity;
    noise_sigma 0 = no noise (noise_seed seeds the noise field).
    """

    crop: tuple[int, int, int, int]
    blur_kernel: int
    blur_sigma: float
    brightness: float
    contrast: float
    vflip: bool
    hflip: bool
    noise_sigma: float
    noise_seed: int

    @staticmethod
    def identity(height: int, width: int) -> AugmentParams:
        """Parameters that only resize a (height, width) sample."""
        return AugmentParams((0, 0, height, width), 0, 0.0, 1.0, 1.0, False, False, 0.0, 0)

    def geometric_only(self) -> AugmentParams:
        """The same crop and flips with every photometric step switched off."""
        return AugmentParams(self.crop, 0, 0.0, 1.0, 1.0, self.vflip, self.hflip, 0.0, 0)


def random_crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    rng: np.random.Generator,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """A RandomResizedCrop box (y0, x0, h, w) inside a (height, width) image, torchvision's rule:
    ten tries of area fraction ~ U(scale) and log-uniform aspect ``ratio``, else the central crop
    with the aspect clamped into ``ratio``."""
    area = height * width
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_r))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            y0 = int(rng.integers(0, height - h + 1))
            x0 = int(rng.integers(0, width - w + 1))
            return y0, x0, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def sample_params(height: int, width: int, cfg: AugmentConfig, rng: np.random.Generator) -> AugmentParams:
    """Draw the augmentation of one (height, width) sample: every step with probability ``cfg.p``."""
    apply = rng.random() < cfg.p
    if not apply:
        return AugmentParams.identity(height, width)
    i = cfg.intensity
    crop = random_crop_box(height, width, (0.99 - 0.5 * i, 0.99), rng)
    kernel = int(rng.choice(BLUR_KERNELS))
    sigma = float(rng.uniform(0.1, max(0.1, 5.0 * i)))
    brightness = float(rng.uniform(max(0.0, 1.0 - 0.75 * i), 1.0 + 0.75 * i))
    contrast = float(rng.uniform(max(0.0, 1.0 - 0.5 * i), 1.0 + 0.5 * i))
    vflip = bool(rng.random() < 0.5 * i)
    hflip = bool(rng.random() < 0.5 * i)
    noise_seed = int(rng.integers(0, 2**31))
    return AugmentParams(crop, kernel, sigma, brightness, contrast, vflip, hflip, 0.5 * i, noise_seed)


def apply_params(
    image: np.ndarray, mask: np.ndarray, params: AugmentParams, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``params`` to image (h, w) float32 in [0, 1] and mask (h, w) {0,1}.

    Returns image (size, size) float32 in [0, 1] and mask (size, size) uint8 {0,1}; the mask is resized
    as a float (area average when shrinking, bilinear when enlarging) and thresholded at 0.5.
    """
    y0, x0, h, w = params.crop
    img = resize_square(np.ascontiguousarray(image[y0 : y0 + h, x0 : x0 + w], dtype=np.float32), size)
    msk = resize_square(np.ascontiguousarray(mask[y0 : y0 + h, x0 : x0 + w], dtype=np.float32), size)
    img = np.array(img, dtype=np.float32)  # own copy: resize_square may return its input
    if params.blur_kernel:
        k = params.blur_kernel
        img = cv2.GaussianBlur(img, (k, k), params.blur_sigma, borderType=cv2.BORDER_REFLECT_101)
    if params.brightness != 1.0:
        img = np.clip(img * np.float32(params.brightness), 0.0, 1.0)
    if params.contrast != 1.0:
        mean = np.float32(img.mean())
        img = np.clip((img - mean) * np.float32(params.contrast) + mean, 0.0, 1.0)
    if params.vflip:
        img, msk = img[::-1], msk[::-1]
    if params.hflip:
        img, msk = img[:, ::-1], msk[:, ::-1]
    if params.noise_sigma > 0:
        noise = np.random.default_rng(params.noise_seed).normal(0.0, params.noise_sigma, img.shape)
        img = np.clip(img + noise.astype(np.float32), 0.0, 1.0)
    return np.ascontiguousarray(img, dtype=np.float32), np.ascontiguousarray(msk >= 0.5, dtype=np.uint8)


def augment(
    image: np.ndarray, mask: np.ndarray, size: int, cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw and apply one augmentation: image (h, w) float32 [0, 1], mask (h, w) {0,1} ->
    image (size, size) float32 [0, 1], mask (size, size) uint8 {0,1}."""
    params = sample_params(image.shape[0], image.shape[1], cfg, rng)
    return apply_params(image, mask, params, size)
