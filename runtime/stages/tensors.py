"""The pipeline's stages over torch tensors: the device-resident path.

When the models run on a GPU, each image is uploaded once (uint8, or uint16 held as int32) and everything
per patch happens where the model is: patch extraction, intensity mapping, resizing, point prompts,
thresholding, speck counting and removal, agreement, and stitching into a device-resident mask. Only
small per-batch numbers cross to the host (prompt histograms and foreground counts, the per-patch
decision statistics) and, once per image, the finished mask. The same functions run on CPU tensors,
which is how they are tested against the numpy stages.

What equals the numpy stages exactly, and what only to float rounding:

* exact: patch extraction and padding, intensity mapping (the same float32 operations), the prompt
  pipeline from the uint8 levels on (median, histogram, Otsu level and quantile — computed on the host
  from the histogram by the very function the numpy stage uses —, morphological opening, component
  sizes, the seeded draw of points), speck counts, speck removal, agreement and every other decision
  statistic, and the decision itself (:func:`~samsem.runtime.stages.decision.decide_from_stats` on
  the host), and the bilinear resampling of model probabilities (model 1's over each patch, model 2's to the
  patch size): both paths sample through
  :func:`~samsem.runtime.stages.preprocess.bilinear_taps` with the same float32 operations (along x,
  then y), so a probability that lands on the threshold decides the same way on both;
* to float32 rounding (about 1e-7 relative): resizing of model inputs (``torch.nn.functional
  .interpolate`` instead of OpenCV's kernels), so the models see inputs that differ by that rounding.

Connected components (8-connected) come from label propagation: every foreground pixel starts with its
own index; each round gives every pixel the largest label of its horizontal run, then of its vertical
run (segmented maxima through ``scatter_reduce``), then of its 3x3 neighbourhood (max pooling), then
follows labels as pointers twice (pointer jumping). Labels only grow and stay inside the component, so
at the fixed point each component carries its largest pixel index; line-like masks converge in a few
rounds. Masks still changing after ``max_rounds`` are labelled on the host by the run-based Numba
labeller instead, so component semantics are exact in every case.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from samsem.evaluation.components import label8
from samsem.runtime.stages.preprocess import bilinear_taps
from samsem.runtime.stages.prompts import NO_LEVEL, PromptConfig, foreground_levels, min_object_px, pick_ranks
from samsem.runtime.stages.tiling import reflect_index

MAX_ROUNDS = 32  # label-propagation rounds before a mask is labelled on the host instead


# ------------------------------------------------------------------------------------ images and patches


def upload(raw: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """Host image (H, W) uint8/uint16 -> (H, W) tensor on ``device``: uint8, or int32 for uint16."""
    raw = np.ascontiguousarray(raw)
    if raw.dtype == np.uint8:
        return torch.from_numpy(raw).to(device)
    if raw.dtype == np.uint16:
        return torch.from_numpy(raw.view(np.int16)).to(device).to(torch.int32) & 0xFFFF
    raise TypeError(f"expected a uint8 or uint16 image, got {raw.dtype}")


def extract_patches(image: torch.Tensor, boxes: np.ndarray, patch: int) -> torch.Tensor:
    """Cut ``boxes`` (N, 4) ``[y0, x0, y1, x1]`` out of ``image`` (H, W) into (N, patch, patch).

    Like :func:`~samsem.runtime.stages.tiling.extract_patch` (same dtype; the bottom/right remainder of a
    box smaller than a patch mirrors the box, as :func:`~samsem.runtime.stages.tiling.reflect_index`),
    one gather.
    """
    boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
    dev = image.device
    ar = torch.arange(patch, device=dev)[None]
    y0 = torch.from_numpy(boxes[:, 0]).to(dev)[:, None]
    x0 = torch.from_numpy(boxes[:, 1]).to(dev)[:, None]
    h = torch.from_numpy(boxes[:, 2] - boxes[:, 0]).to(dev)[:, None]
    w = torch.from_numpy(boxes[:, 3] - boxes[:, 1]).to(dev)[:, None]
    ys = y0 + _reflect(ar, h)  # (N, p)
    xs = x0 + _reflect(ar, w)
    return image[ys[:, :, None], xs[:, None, :]]


def _reflect(i: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """reflect_index on tensors: i (1, p) folded into 0..size-1 for each row of size (N, 1)."""
    period = torch.clamp(2 * size - 2, min=1)
    m = i % period
    return torch.where(m < size, m, period - m)


def apply_range(image: torch.Tensor, levels: tuple[float, float]) -> torch.Tensor:
    """Map ``image`` (any shape, integer) so ``levels`` become 0 and 1; clip; float32 (the numpy stage's
    float32 operations: subtract float32(low), multiply by float32(1 / (high - low)))."""
    lo, hi = levels
    scale = float(np.float32(1.0 / (hi - lo)))
    out = (image.to(torch.float32) - float(np.float32(lo))) * scale
    return out.clamp_(0.0, 1.0)


def resize_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, h, w) float32 -> (N, size, size): bilinear (pixel centres) when enlarging, area when shrinking."""
    if images.shape[-2:] == (size, size):
        return images
    enlarge = size * size >= images.shape[-2] * images.shape[-1]
    mode = "bilinear" if enlarge else "area"
    kwargs = {"align_corners": False} if enlarge else {}
    return F.interpolate(images[:, None], size=(size, size), mode=mode, **kwargs)[:, 0]


def upsample_boxes(
    prob: torch.Tensor, full_shape: tuple[int, int], boxes: np.ndarray, patch: int
) -> torch.Tensor:
    """Bilinear samples of ``prob`` (h, w), upsampled to ``full_shape`` (H, W), inside each box.

    boxes: (N, 4) ``[y0, x0, y1, x1]``; returns (N, patch, patch) float32 whose pixel (i, j) is image pixel
    (y0 + i, x0 + j) (pixels past a box's end repeat its last row/column). Pixel-centre convention and
    replicated edges, as :func:`~samsem.runtime.stages.preprocess.resize_region`.
    """
    H, W = full_shape
    boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
    ar = np.arange(patch, dtype=np.int64)
    iy = np.minimum(boxes[:, 0:1] + ar[None], H - 1)
    ix = np.minimum(boxes[:, 1:2] + ar[None], W - 1)
    return _sample(prob, full_shape, iy, ix)


def flatten_patches(
    patches: torch.Tensor,
    background: torch.Tensor,
    level: float,
    full_shape: tuple[int, int],
    boxes: np.ndarray,
) -> torch.Tensor:
    """Patches (N, p, p) from :func:`extract_patches` minus the background map (h, w) upsampled to
    ``full_shape`` at their pixels (mirrored remainders included), plus ``level``: float32, equal to
    :meth:`~samsem.runtime.stages.preprocess.Background.flatten` of the host crops."""
    boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
    p = patches.shape[-1]
    iy = np.stack([b[0] + reflect_index(p, int(b[2] - b[0])) for b in boxes])
    ix = np.stack([b[1] + reflect_index(p, int(b[3] - b[1])) for b in boxes])
    out = patches.to(torch.float32) - _sample(background, full_shape, iy, ix)
    return out + float(np.float32(level))


def _sample(prob: torch.Tensor, full_shape: tuple[int, int], iy: np.ndarray, ix: np.ndarray) -> torch.Tensor:
    """``prob`` (h, w) bilinearly upsampled to ``full_shape`` at rows iy (N, p) x columns ix (N, q) of
    each of N boxes: (N, p, q) float32."""
    h, w = prob.shape
    H, W = full_shape
    dev = prob.device
    (y0, y1, fy), (x0, x1, fx) = _taps(iy, h, H, dev), _taps(ix, w, W, dev)
    flat = prob.reshape(-1)
    rows0, rows1 = (y0 * w)[:, :, None], (y1 * w)[:, :, None]
    c0, c1 = x0[:, None, :], x1[:, None, :]
    top = flat[rows0 + c0] * (1 - fx[:, None, :]) + flat[rows0 + c1] * fx[:, None, :]
    bottom = flat[rows1 + c0] * (1 - fx[:, None, :]) + flat[rows1 + c1] * fx[:, None, :]
    return top * (1 - fy[:, :, None]) + bottom * fy[:, :, None]


def _taps(pix: np.ndarray, n: int, N: int, dev: torch.device) -> tuple[torch.Tensor, ...]:
    """:func:`~samsem.runtime.stages.preprocess.bilinear_taps` as tensors on ``dev``."""
    return tuple(torch.from_numpy(a).to(dev) for a in bilinear_taps(pix, n, N))


def resize_probs(probs: torch.Tensor, size: int) -> torch.Tensor:
    """(N, h, w) float32 -> (N, size, size) bilinear (pixel centres, no antialiasing), as ``cv2.resize``
    with ``INTER_LINEAR``, by the float32 operations of :func:`upsample_boxes` (bit for bit
    :func:`~samsem.runtime.stages.preprocess.resize_region` of each over the whole (size, size))."""
    h, w = probs.shape[-2:]
    if (h, w) == (size, size):
        return probs
    pix = np.arange(size)
    (y0, y1, fy), (x0, x1, fx) = _taps(pix, h, size, probs.device), _taps(pix, w, size, probs.device)
    g0, g1 = probs[:, :, x0], probs[:, :, x1]
    across = g0 * (1 - fx) + g1 * fx  # (N, h, size)
    return across[:, y0] * (1 - fy)[:, None] + across[:, y1] * fy[:, None]


def paste(out: torch.Tensor, masks: torch.Tensor, boxes: np.ndarray, owned: np.ndarray) -> None:
    """Write the owned part of each mask (N, p, p) (pixel (0, 0) at its box's corner) into ``out`` (H, W)."""
    for k in range(len(masks)):
        by0, bx0 = int(boxes[k][0]), int(boxes[k][1])
        oy0, ox0, oy1, ox1 = (int(v) for v in owned[k])
        out[oy0:oy1, ox0:ox1] = masks[k, oy0 - by0 : oy1 - by0, ox0 - bx0 : ox1 - bx0]


def valid_masks(sizes: np.ndarray, patch: int, device: torch.device) -> torch.Tensor:
    """(N, patch, patch) bool, True on the top-left (h, w) of each ``sizes`` (N, 2) row (real pixels)."""
    s = torch.from_numpy(np.asarray(sizes, np.int64).reshape(-1, 2)).to(device)
    ar = torch.arange(patch, device=device)
    return (ar[None, :, None] < s[:, 0, None, None]) & (ar[None, None, :] < s[:, 1, None, None])


# ------------------------------------------------------------------------------------ components


def _run_max(labels: torch.Tensor, fg: torch.Tensor) -> torch.Tensor:
    """Each foreground pixel of (N, H, W) gets the largest label of its horizontal run."""
    n, h, w = labels.shape
    start = fg.clone()
    start[:, :, 1:] &= ~fg[:, :, :-1]
    run = torch.cumsum(start, dim=2, dtype=torch.int64)  # 1.. along each row (bg: previous run's id)
    rows = torch.arange(n * h, device=labels.device).view(n, h, 1) * (w // 2 + 2)
    key = (rows + run).reshape(-1)
    best = torch.zeros(n * h * (w // 2 + 2), dtype=labels.dtype, device=labels.device)
    best.scatter_reduce_(0, key, labels.reshape(-1), "amax")
    return torch.where(fg, best[key].view(n, h, w), labels)


def label_components(fg: torch.Tensor, max_rounds: int = MAX_ROUNDS) -> tuple[torch.Tensor, torch.Tensor]:
    """8-connected components of ``fg`` (N, H, W) bool by label propagation (module docstring).

    Returns ``(labels, converged)``: labels (N, H, W) float32, 0 on background, else 1 + the largest
    raster index of the pixel's component (exact integers: H * W must stay below 2**24); converged (N,)
    bool, False for masks still changing after ``max_rounds`` rounds (their labels are then partial).
    """
    n, h, w = fg.shape
    if h * w >= 1 << 24:
        raise ValueError(f"masks of {h}x{w} pixels are too large for float32 labels")
    idx = torch.arange(1, h * w + 1, dtype=torch.float32, device=fg.device).view(1, h, w)
    zero = torch.zeros((), dtype=torch.float32, device=fg.device)
    labels = torch.where(fg, idx, zero)
    fg_t = fg.transpose(1, 2).contiguous()
    changed = torch.ones(n, dtype=torch.bool, device=fg.device)
    for _ in range(max_rounds):
        prev = labels
        labels = _run_max(labels, fg)
        labels = _run_max(labels.transpose(1, 2).contiguous(), fg_t).transpose(1, 2).contiguous()
        labels = torch.where(fg, F.max_pool2d(labels[:, None], 3, 1, 1)[:, 0], zero)
        for _ in range(2):  # pointer jumping: a label is the index (+1) of a pixel of the same component
            flat = labels.view(n, -1)
            jumped = flat.gather(1, (flat.long() - 1).clamp_(min=0)).view(n, h, w)
            labels = torch.where(fg, torch.maximum(labels, jumped), zero)
        changed = (labels != prev).flatten(1).any(1)
        if not bool(changed.any()):
            break
    return labels, ~changed


def component_sizes(fg: torch.Tensor, max_rounds: int = MAX_ROUNDS) -> torch.Tensor:
    """Pixel count of each foreground pixel's 8-connected component: (N, H, W) int32, 0 on background.

    Masks that label propagation does not settle within ``max_rounds`` are labelled on the host (exact).
    """
    n, h, w = fg.shape
    if n == 0 or h * w == 0:
        return torch.zeros(fg.shape, dtype=torch.int32, device=fg.device)
    labels, converged = label_components(fg, max_rounds)
    key = labels.long() + torch.arange(n, device=fg.device).view(n, 1, 1) * (h * w + 1)
    counts = torch.zeros(n * (h * w + 1), dtype=torch.int32, device=fg.device)
    counts.scatter_add_(0, key.reshape(-1), torch.ones(key.numel(), dtype=torch.int32, device=fg.device))
    sizes = torch.where(fg, counts[key], torch.zeros((), dtype=torch.int32, device=fg.device))
    stuck = torch.nonzero(~converged).flatten().tolist()
    for i in stuck:  # rare (maze-like noise): the host labeller
        lab, n_comp = label8(fg[i].cpu().numpy())
        per = np.bincount(lab.ravel(), minlength=n_comp + 1).astype(np.int32)
        per[0] = 0
        sizes[i] = torch.from_numpy(per[lab]).to(fg.device)
    return sizes


def count_small(sizes: torch.Tensor, max_size: int) -> torch.Tensor:
    """(N,) int64 number of components of at most ``max_size`` pixels, from per-pixel ``sizes`` (N, H, W)
    (each component's pixels contribute 1/size each, summed in float64 and rounded)."""
    small = (sizes > 0) & (sizes <= max_size)
    inv = torch.where(small, 1.0 / sizes.clamp(min=1).to(torch.float64), torch.zeros((), dtype=torch.float64))
    return inv.flatten(1).sum(1).round().to(torch.int64)


# ------------------------------------------------------------------------------------ prompts


def _median(u8: torch.Tensor, ksize: int) -> torch.Tensor:
    """ksize x ksize median of (N, H, W) uint8 with replicated borders (as cv2.medianBlur)."""
    h, w = u8.shape[1:]
    r = ksize // 2
    padded = F.pad(u8[:, None].to(torch.float32), (r, r, r, r), mode="replicate")[:, 0].to(u8.dtype)
    windows = torch.stack(
        [padded[:, dy : dy + h, dx : dx + w] for dy in range(ksize) for dx in range(ksize)], dim=1
    )  # (N, k*k, H, W)
    return windows.median(dim=1).values


def _morph(fg: torch.Tensor, offsets: Sequence[tuple[int, int]], erode: bool) -> torch.Tensor:
    """Binary erosion (pixels outside count as foreground) or dilation (outside = background) of (N, H, W)
    bool with the structuring element given as (dy, dx) offsets from its centre (cv2's defaults)."""
    h, w = fg.shape[1:]
    r = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    padded = F.pad(fg, (r, r, r, r), value=erode)
    out = None
    for dy, dx in offsets:
        shifted = padded[:, r + dy : r + dy + h, r + dx : r + dx + w]
        out = shifted if out is None else (out & shifted if erode else out | shifted)
    assert out is not None
    return out


def _opening(fg: torch.Tensor, radius: int) -> torch.Tensor:
    d = 2 * radius + 1
    element = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (d, d))
    offsets = [(int(y) - radius, int(x) - radius) for y, x in zip(*np.nonzero(element), strict=True)]
    return _morph(_morph(fg, offsets, erode=True), offsets, erode=False)


def histograms(u8: torch.Tensor) -> torch.Tensor:
    """(N, 256) int64 counts of the levels of (N, H, W) uint8."""
    n = u8.shape[0]
    key = u8.reshape(n, -1).to(torch.int64) + torch.arange(n, device=u8.device)[:, None] * 256
    return torch.bincount(key.reshape(-1), minlength=n * 256).view(n, 256)


def candidate_foreground(images: torch.Tensor, cfg: PromptConfig) -> torch.Tensor:
    """Pixels that are metal with high confidence: images (N, S, S) float32 in [0, 1] -> (N, S, S) bool
    (the steps of :mod:`~samsem.runtime.stages.prompts`; levels decided on the host from histograms)."""
    n, h, w = images.shape
    u8 = torch.round(images * 255.0).clamp_(0, 255).to(torch.uint8)
    if cfg.denoise_ksize > 1:
        u8 = _median(u8, cfg.denoise_ksize)
    levels = foreground_levels(histograms(u8).cpu().numpy(), cfg)
    if bool((levels >= NO_LEVEL).all()):
        return torch.zeros(images.shape, dtype=torch.bool, device=images.device)
    lv = torch.from_numpy(levels).to(images.device).view(n, 1, 1)
    fg = u8.to(torch.int64) >= lv
    if cfg.morph_radius > 0:
        fg = _opening(fg, cfg.morph_radius)
    min_px = max(min_object_px(cfg, h * w), 1)
    if min_px > 1:
        fg = component_sizes(fg) >= min_px
    return fg


def make_prompts(
    images: torch.Tensor, cfg: PromptConfig, seeds: Sequence[int | Sequence[int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Point prompts for (B, S, S) float32 images on any device, equal to the numpy
    :func:`~samsem.runtime.stages.prompts.make_prompts`: points (B, n_points, 2) float32 (x, y) pixel
    indices (the centre where ``has_fg`` (B,) bool is False), on the host."""
    b, s_h, s_w = images.shape
    if len(seeds) != b:
        raise ValueError(f"got {len(seeds)} seeds for {b} images")
    points = np.empty((b, cfg.n_points, 2), np.float32)
    points[..., 0] = (s_w - 1) / 2
    points[..., 1] = (s_h - 1) / 2
    has_fg = np.zeros(b, bool)
    if b == 0:
        return points, has_fg
    fg = candidate_foreground(images, cfg).reshape(b, -1)
    cum = torch.cumsum(fg, dim=1, dtype=torch.int64)
    counts = cum[:, -1].cpu().numpy()
    ranks = [pick_ranks(int(c), cfg.n_points, np.random.default_rng(seeds[i])) for i, c in enumerate(counts)]
    rows = [i for i, r in enumerate(ranks) if r.size]
    if rows:
        want = torch.from_numpy(np.stack([ranks[i] for i in rows]) + 1).to(images.device)
        flat = torch.searchsorted(cum[rows], want).cpu().numpy()  # first pixel whose count reaches rank+1
        y, x = np.divmod(flat, s_w)
        points[rows] = np.stack([x, y], axis=-1).astype(np.float32)
        has_fg[rows] = True
    return points, has_fg


# ------------------------------------------------------------------------------------ decision


def patch_stats(
    m1: torch.Tensor, m2: torch.Tensor, valid: torch.Tensor | None, max_size: int, robust: bool
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """The per-patch statistics of :func:`~samsem.runtime.stages.decision.patch_stats` over tensors.

    m1, m2: (N, h, w) bool; valid: (N, h, w) bool or None. Returns ``(stats, a, b)``: stats (N, 8) int64
    on the host [speckles1, speckles2, identical, fg1, fg2, valid, edges1, edges2], a, b the masks decided
    on ((N, h, w) bool, without specks when ``robust``).
    """
    n = m1.shape[0]
    if valid is None:
        valid = torch.ones_like(m1)
    padded = ~valid.flatten(1).all(1)
    counts, cleaned = [], []
    for m in (m1, m2):
        sizes = component_sizes(m)
        if robust:
            cleaned.append(m & (sizes > max_size))
        sp = count_small(sizes, max_size)
        rows = torch.nonzero(padded).flatten()
        if rows.numel():  # speckles count on real pixels only
            sp[rows] = count_small(component_sizes(m[rows] & valid[rows]), max_size)
        counts.append(sp)
    a, b = (cleaned[0], cleaned[1]) if robust else (m1, m2)
    av, bv = a & valid, b & valid
    pair_h = valid[:, :, 1:] & valid[:, :, :-1]
    pair_v = valid[:, 1:, :] & valid[:, :-1, :]

    def edges(m: torch.Tensor) -> torch.Tensor:
        dh = (m[:, :, 1:] != m[:, :, :-1]) & pair_h
        dv = (m[:, 1:, :] != m[:, :-1, :]) & pair_v
        return dh.flatten(1).sum(1) + dv.flatten(1).sum(1)

    stats = torch.stack(
        [
            counts[0],
            counts[1],
            ((a == b) & valid).flatten(1).sum(1),
            av.flatten(1).sum(1),
            bv.flatten(1).sum(1),
            valid.flatten(1).sum(1),
            edges(a),
            edges(b),
        ],
        dim=1,
    )
    return stats.cpu().numpy().astype(np.int64).reshape(n, 8), a, b
