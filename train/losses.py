"""Training losses as pure functions over tensors, with one thin module that combines them.

The objective is ``L = alpha * BCE + (1 - alpha) * Dice + lambda * Betti`` plus optional terms (all off by
default): a soft-IoU reward, a mask-count penalty and an edge-placement-error penalty, and, for models
with a quality head (SAM2), an MSE between the predicted and the actual IoU of every output mask.

Multimask outputs (SAM2 returns K = 3 masks per prompt) enter as in SAM2's own training: the pixel loss
is computed for every mask, and per sample only the mask with the smallest pixel loss is trained
("best of K", selection detached). The Betti and optional terms are computed on that mask only, which
keeps the expensive persistent-homology term at one mask per sample. The quality head learns the IoU
of all K masks, so that at inference the highest-scoring mask is the one the pixel loss trained.

Resolutions: pixel terms compare logits upsampled (bilinearly) to the target's resolution (the model
input S); the Betti term is computed at ``betti_size`` (default 256 = SAM2's native S/4 output for
S = 1024, never finer than the logits), with the prediction area-averaged there and the target
area-averaged and thresholded at 0.5.
On a shared 2-core CPU the Betti term of one 256 x 256 pair costs about 0.2 s (forward and backward).
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from samsem.errors import ConfigError
from samsem.train.config import FILTRATIONS, LossConfig


def _to_target_size(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Bilinearly resample logits (B, K, h, w) to the target's (H, W)."""
    if logits.shape[-2:] == target.shape[-2:]:
        return logits
    return F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)


def bce_per_mask(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of every mask: logits (B, K, H, W), target (B, 1, H, W) {0,1} -> (B, K)."""
    t = target.to(logits.dtype).expand_as(logits)
    return F.binary_cross_entropy_with_logits(logits, t, reduction="none").mean(dim=(-2, -1))


def dice_per_mask(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss ``1 - (2|P.T| + s) / (|P| + |T| + s)`` of every mask -> (B, K); 0 for a perfect mask."""
    p = torch.sigmoid(logits)
    t = target.to(p.dtype)
    inter = (p * t).sum(dim=(-2, -1))
    total = p.sum(dim=(-2, -1)) + t.sum(dim=(-2, -1))
    return 1.0 - (2.0 * inter + smooth) / (total + smooth)


def pixel_loss_per_mask(logits: torch.Tensor, target: torch.Tensor, alpha: float) -> torch.Tensor:
    """``alpha * BCE + (1 - alpha) * Dice`` of every mask at the target's resolution -> (B, K)."""
    up = _to_target_size(logits, target)
    return alpha * bce_per_mask(up, target) + (1.0 - alpha) * dice_per_mask(up, target)


def select_masks(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Pick one mask per sample: x (B, K, ...), index (B,) long -> (B, 1, ...)."""
    return x[torch.arange(x.shape[0], device=x.device), index].unsqueeze(1)


def mask_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of every thresholded mask (logit > 0) with the target -> (B, K) float; 1 when both are empty."""
    up = _to_target_size(logits, target) > 0
    t = target > 0.5
    inter = (up & t).sum(dim=(-2, -1)).float()
    union = (up | t).sum(dim=(-2, -1)).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def soft_iou_loss(probs: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """``1 - soft IoU`` per sample: probs, target (B, 1, H, W) -> (B,)."""
    t = target.to(probs.dtype)
    inter = (probs * t).sum(dim=(-3, -2, -1))
    union = (probs + t - probs * t).sum(dim=(-3, -2, -1))
    return 1.0 - (inter + smooth) / (union + smooth)


def component_count_error(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Relative error of the number of 8-connected components: ``|n_pred - n_gt| / max(n_gt, 1)``.

    probs, target: (B, 1, H, W); the prediction is thresholded at 0.5. Returns (B,) float, no gradient
    (counts are piecewise constant); used as a per-sample weight on the differentiable pixel loss.
    """
    from samsem.evaluation.components import label8

    pred = (probs.detach() > 0.5).cpu().numpy().astype(np.uint8)
    gt = (target.detach() > 0.5).cpu().numpy().astype(np.uint8)
    errs = []
    for p, g in zip(pred[:, 0], gt[:, 0], strict=True):
        n_p, n_g = label8(p)[1], label8(g)[1]
        errs.append(abs(n_p - n_g) / max(n_g, 1))
    return torch.tensor(errs, dtype=torch.float32, device=probs.device)


def _edge_distances(gt: np.ndarray, cap: float) -> tuple[np.ndarray, np.ndarray, int]:
    """(d_out, d_in, n_edge) of a (H, W) {0,1} mask: distance of background pixels to the foreground,
    of foreground pixels to the background (both capped), and the number of foreground edge pixels."""
    fg = gt.astype(np.uint8)
    if fg.all() or not fg.any():
        d = np.full(fg.shape, cap, np.float32)
        zero = np.zeros(fg.shape, np.float32)
        return (zero, d, 0) if fg.all() else (d, zero, 0)
    d_out = cv2.distanceTransform(1 - fg, cv2.DIST_L2, 3)
    d_in = cv2.distanceTransform(fg, cv2.DIST_L2, 3)
    n_edge = int(((d_in > 0) & (d_in < 1.5)).sum())
    return np.minimum(d_out, cap), np.minimum(d_in, cap), n_edge


def edge_placement_loss(probs: torch.Tensor, target: torch.Tensor, cap: float = 16.0) -> torch.Tensor:
    """Differentiable edge-placement-error surrogate per sample: probs, target (B, 1, H, W) -> (B,).

    ``sum(p * d_out + (1 - p) * d_in) / n_edge``: predicted foreground is charged its distance to the
    true foreground, missed foreground its distance to the true background, normalised by the number of
    true edge pixels, so an edge shifted by ``e`` pixels costs about ``e**2 / 2``. 0 for a perfect mask.
    """
    gt = (target.detach() > 0.5).cpu().numpy()
    out = []
    for b in range(probs.shape[0]):
        d_out, d_in, n_edge = _edge_distances(gt[b, 0], cap)
        d_out_t = torch.from_numpy(d_out).to(probs.device, probs.dtype)
        d_in_t = torch.from_numpy(d_in).to(probs.device, probs.dtype)
        p = probs[b, 0]
        out.append((p * d_out_t + (1.0 - p) * d_in_t).sum() / max(n_edge, 1))
    return torch.stack(out)


def resample_for_betti(
    probs: torch.Tensor, target: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bring probs (B, 1, h, w) and target (B, 1, H, W) {0,1} to (B, 1, n, n), ``n = min(size, h)``.

    The grid is never finer than the prediction's own (upsampling adds no topology). The prediction is
    area-averaged when shrinking; the target is area-averaged and thresholded at 0.5, so it stays binary.
    """
    n = min(size, probs.shape[-2])
    p = probs.float()
    if p.shape[-2:] != (n, n):
        p = F.adaptive_avg_pool2d(p, n)
    t = target.float()
    if t.shape[-2:] != (n, n):
        t = (F.adaptive_avg_pool2d(t, n) >= 0.5).float()
    return p, t


@cache
def _betti_extension() -> ModuleType:
    """topolosses' compiled Betti-matching extension, loaded straight from its file.

    Importing the ``topolosses`` package instead would also load its Topograph extension, which brings a
    bundled OpenCV with a second OpenMP runtime; next to torch's own that made CPU backward passes over
    100x slower here (threads of two runtimes spinning against each other). The extension has no such
    dependency, and the loss is assembled from its matching below, as topolosses' BettiMatchingLoss does.
    """
    loaded = sys.modules.get("topolosses.losses.betti_matching.src.betti_matching")
    if loaded is not None:  # the package was imported elsewhere: pybind11 allows one copy only
        return loaded
    spec = importlib.util.find_spec("topolosses")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the Betti-matching loss needs topolosses (pip install 'samsem[train]')")
    folder = Path(next(iter(spec.submodule_search_locations))) / "losses" / "betti_matching" / "src"
    files = sorted(folder.glob("betti_matching.*.so")) + sorted(folder.glob("betti_matching.*.pyd"))
    if not files:
        raise ConfigError(f"topolosses has no compiled betti_matching extension in {folder}")
    ext_spec = importlib.util.spec_from_file_location("betti_matching", files[0])
    assert ext_spec is not None and ext_spec.loader is not None
    module = importlib.util.module_from_spec(ext_spec)
    ext_spec.loader.exec_module(module)
    return module


def _at(values: torch.Tensor, coords: np.ndarray) -> torch.Tensor:
    """values (h, w) at integer coordinates (M, 2) [row, col] -> (M,)."""
    idx = torch.as_tensor(np.asarray(coords, np.int64).reshape(-1, 2), device=values.device)
    return values[idx[:, 0], idx[:, 1]]


def betti_matching_loss(
    probs: torch.Tensor,
    target: torch.Tensor,
    filtration: str = "sublevel",
    barcode_length_threshold: float = 0.345,
    push_unmatched_to_1_0: bool = True,
    pad: bool = True,
) -> torch.Tensor:
    """Betti-matching loss averaged over the batch: probs, target (B, 1, h, w) float -> scalar.

    The persistence barcodes of prediction and target under the chosen filtration are matched by
    topolosses' extension. Per instance and homology dimension the loss is ``2 * sum |pair_pred -
    pair_target|^2`` over matched (birth, death) pairs, plus for unmatched pairs either
    ``2 * sum (birth - 1)^2 + death^2`` (``push_unmatched_to_1_0``) or ``sum (birth - death)^2``;
    unmatched prediction pairs shorter than ``barcode_length_threshold`` are ignored. ``pad`` surrounds
    both maps with one pixel of background (topolosses' ``sphere``), so lines that touch the border of
    a patch still count as components. Gradients flow into ``probs``; 0 when ``probs == target``.
    """
    if filtration not in FILTRATIONS:
        raise ConfigError(f"filtration must be one of {FILTRATIONS}, got {filtration!r}")
    ext = _betti_extension()
    with torch.autocast(probs.device.type, enabled=False):
        p, t = probs.float()[:, 0], target.float()[:, 0]
        if pad:
            p, t = F.pad(p, (1, 1, 1, 1), value=0.0), F.pad(t, (1, 1, 1, 1), value=0.0)
        if filtration == "superlevel":
            p, t = 1.0 - p, 1.0 - t
        elif filtration == "bothlevels":
            p, t = torch.cat([p, 1.0 - p]), torch.cat([t, 1.0 - t])
        p_np = p.detach().cpu().numpy().astype(np.float64)
        t_np = t.detach().cpu().numpy().astype(np.float64)
        results = ext.compute_matching(list(p_np), list(t_np))
        losses = []
        for k, r in enumerate(results):
            pk, tk = p[k], t[k]
            total = pk.new_zeros(())
            for dim in range(len(r.num_matched)):
                pb, pd = (
                    _at(pk, r.input1_matched_birth_coordinates[dim]),
                    _at(pk, r.input1_matched_death_coordinates[dim]),
                )
                tb, td = (
                    _at(tk, r.input2_matched_birth_coordinates[dim]),
                    _at(tk, r.input2_matched_death_coordinates[dim]),
                )
                total = total + 2.0 * ((pb - tb) ** 2 + (pd - td) ** 2).sum()
                ub = _at(pk, r.input1_unmatched_birth_coordinates[dim])
                ud = _at(pk, r.input1_unmatched_death_coordinates[dim])
                keep = (ub - ud).abs() > barcode_length_threshold
                ub, ud = ub[keep], ud[keep]
                vb = _at(tk, r.input2_unmatched_birth_coordinates[dim])
                vd = _at(tk, r.input2_unmatched_death_coordinates[dim])
                if push_unmatched_to_1_0:
                    total = (
                        total + 2.0 * ((ub - 1.0) ** 2 + ud**2).sum() + 2.0 * ((vb - 1.0) ** 2 + vd**2).sum()
                    )
                else:
                    total = total + ((ub - ud) ** 2).sum() + ((vb - vd) ** 2).sum()
            losses.append(total)
        return torch.stack(losses).mean()


def gap_map(target: torch.Tensor, size: int) -> torch.Tensor:
    """The background that a closing with a ``size`` x ``size`` square fills: the narrow gaps between
    lines (and inner corners), where predicted metal would short two lines. target (B, 1, H, W) {0, 1}
    -> (B, 1, H, W) {0, 1}."""
    pad = size // 2
    dilated = F.max_pool2d(target, size, stride=1, padding=pad)
    closed = -F.max_pool2d(-dilated, size, stride=1, padding=pad)
    return (closed - target).clamp(min=0.0)


def gap_loss(logits: torch.Tensor, target: torch.Tensor, size: int) -> torch.Tensor:
    """Mean BCE over each sample's gap pixels (:func:`gap_map`): (B, 1, H, W) logits and target -> (B,);
    0 for a sample without gaps."""
    gap = gap_map(target, size)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (bce * gap).sum(dim=(1, 2, 3)) / gap.sum(dim=(1, 2, 3)).clamp(min=1.0)


@dataclass
class LossOutput:
    """total: scalar to back-propagate; parts: detached float of every term; best: (B,) chosen mask index."""

    total: torch.Tensor
    parts: dict[str, float]
    best: torch.Tensor


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    cfg: LossConfig,
    betti_on: bool,
    iou_pred: torch.Tensor | None = None,
) -> LossOutput:
    """The full training objective.

    logits: (B, K, h, w) mask logits (K >= 1, any h = w); target: (B, 1, H, W) {0,1} float at the model
    input resolution; betti_on: whether the Betti term (weight ``cfg.betti_weight``) is active this
    epoch; iou_pred: (B, K) predicted mask quality or None. Returns the scalar total, the terms and the
    per-sample index of the trained mask (see module docstring).
    """
    logits = logits.float()
    target = target.float()
    per_mask = pixel_loss_per_mask(logits, target, cfg.alpha)
    best = per_mask.detach().argmin(dim=1)
    pixel = per_mask.gather(1, best[:, None])[:, 0]  # (B,)
    parts: dict[str, Any] = {"pixel": pixel.mean()}
    total = pixel.mean()
    chosen = select_masks(logits, best)  # (B, 1, h, w)
    if betti_on and cfg.betti_weight > 0:
        p, t = resample_for_betti(torch.sigmoid(chosen), target, cfg.betti_size)
        betti = betti_matching_loss(
            p, t, cfg.filtration, cfg.barcode_length_threshold, cfg.push_unmatched_to_1_0, cfg.betti_pad
        )
        parts["betti"] = betti
        total = total + cfg.betti_weight * betti
    if iou_pred is not None and cfg.iou_head_weight > 0:
        iou_mse = F.mse_loss(iou_pred.float(), mask_iou(logits.detach(), target))
        parts["iou_head"] = iou_mse
        total = total + cfg.iou_head_weight * iou_mse
    if cfg.gap_weight > 0:
        parts["gap"] = gap_loss(_to_target_size(chosen, target), target, cfg.gap_px).mean()
        total = total + cfg.gap_weight * parts["gap"]
    if cfg.iou_reward > 0 or cfg.count_penalty > 0 or cfg.epe_penalty > 0:
        probs = torch.sigmoid(_to_target_size(chosen, target))
        if cfg.iou_reward > 0:
            parts["iou_reward"] = soft_iou_loss(probs, target).mean()
            total = total + cfg.iou_reward * parts["iou_reward"]
        if cfg.count_penalty > 0:
            parts["count"] = (component_count_error(probs, target) * pixel).mean()
            total = total + cfg.count_penalty * parts["count"]
        if cfg.epe_penalty > 0:
            parts["epe"] = edge_placement_loss(probs, target, cfg.epe_max_px).mean()
            total = total + cfg.epe_penalty * parts["epe"]
    return LossOutput(total, {k: float(v.detach()) for k, v in parts.items()}, best)


class SegmentationLoss(nn.Module):
    """Module wrapper of :func:`segmentation_loss` holding its :class:`LossConfig`."""

    def __init__(self, cfg: LossConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, betti_on: bool, iou_pred: torch.Tensor | None = None
    ) -> LossOutput:
        return segmentation_loss(logits, target, self.cfg, betti_on, iou_pred)
