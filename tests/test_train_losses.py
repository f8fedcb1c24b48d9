"""Training losses: pixel terms, best-of-K selection, Betti matching on masks with known topology."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samsem.errors import ConfigError
from samsem.train.losses import (
    LossConfig,
    SegmentationLoss,
    betti_matching_loss,
    component_count_error,
    dice_per_mask,
    edge_placement_loss,
    mask_iou,
    pixel_loss_per_mask,
    resample_for_betti,
    segmentation_loss,
    soft_iou_loss,
)


def _two_lines(n: int = 48) -> torch.Tensor:
    """(1, 1, n, n) mask with two horizontal lines (two components, neither touching the border)."""
    m = torch.zeros(1, 1, n, n)
    m[..., 10:14, 4 : n - 4] = 1
    m[..., 30:34, 4 : n - 4] = 1
    return m


def _logits(mask: torch.Tensor, scale: float = 8.0) -> torch.Tensor:
    return (mask * 2 - 1) * scale


def test_pixel_terms_perfect_and_wrong():
    gt = _two_lines()
    good = _logits(gt, 20.0)
    bad = -good
    assert dice_per_mask(good, gt).item() < 1e-3
    assert dice_per_mask(bad, gt).item() > 0.9
    lp = pixel_loss_per_mask(torch.cat([bad, good], 1), gt, alpha=0.6)
    assert lp.shape == (1, 2)
    assert lp[0, 1] < 1e-3 < lp[0, 0]


def test_logits_are_upsampled_to_target_resolution():
    gt = _two_lines(48)
    low = torch.nn.functional.interpolate(_logits(gt, 20.0), size=(24, 24), mode="area")
    assert pixel_loss_per_mask(low, gt, 0.6).item() < 0.05
    assert mask_iou(low, gt).item() > 0.8


def test_best_of_k_trains_only_the_best_mask():
    gt = _two_lines()
    logits = torch.cat([-_logits(gt), _logits(gt) * 0.3, torch.zeros_like(gt)], 1).requires_grad_(True)
    out = segmentation_loss(logits, gt, LossConfig(iou_head_weight=0.0), betti_on=False)
    assert out.best.tolist() == [1]
    out.total.backward()
    g = logits.grad.abs().sum(dim=(-2, -1))[0]
    assert g[1] > 0 and g[0] == 0 and g[2] == 0


def test_iou_head_target_is_actual_iou():
    gt = _two_lines()
    logits = torch.cat([_logits(gt), -_logits(gt)], 1)
    iou = mask_iou(logits, gt)
    assert iou[0].tolist() == pytest.approx([1.0, 0.0])
    pred = torch.tensor([[1.0, 0.0]], requires_grad=True)
    out = segmentation_loss(logits, gt, LossConfig(), betti_on=False, iou_pred=pred)
    assert out.parts["iou_head"] == pytest.approx(0.0, abs=1e-7)
    out = segmentation_loss(logits, gt, LossConfig(), betti_on=False, iou_pred=torch.tensor([[0.0, 1.0]]))
    assert out.parts["iou_head"] == pytest.approx(1.0)


def test_betti_zero_for_identical_masks():
    gt = _two_lines()
    assert betti_matching_loss(gt.clone(), gt).item() == 0.0
    empty = torch.zeros_like(gt)
    assert betti_matching_loss(empty.clone(), empty).item() == 0.0


def test_betti_grows_for_broken_and_joined_lines():
    gt = _two_lines()
    broken = gt.clone()
    broken[..., 10:14, 22:26] = 0  # one line cut in two: 3 components instead of 2
    joined = gt.clone()
    joined[..., 10:34, 22:26] = 1  # the two lines bridged: 1 component instead of 2
    moved = torch.roll(gt, 1, dims=-1)  # same topology, shifted a pixel
    same = betti_matching_loss(moved, gt).item()
    b = betti_matching_loss(broken, gt).item()
    j = betti_matching_loss(joined, gt).item()
    assert b > 1.0 and j > 1.0
    assert same < 0.5 * min(b, j)
    # a partial break (probability 0.7 across the gap) costs less than a full break
    partial = gt.clone()
    partial[..., 10:14, 22:26] = 0.3
    assert 0 < betti_matching_loss(partial, gt).item() < b


def test_betti_gradient_closes_the_gap():
    gt = _two_lines()
    pred = gt.clone()
    pred[..., 10:14, 22:26] = 0.2
    pred.requires_grad_(True)
    betti_matching_loss(pred, gt).backward()
    gap = pred.grad[..., 10:14, 22:26]
    assert (gap <= 0).all() and gap.min() < 0  # descent raises the gap's probability


def test_betti_term_switch_and_weight():
    gt = _two_lines()
    broken = gt.clone()
    broken[..., 10:14, 22:26] = 0
    logits = _logits(broken, 20.0)
    off = segmentation_loss(logits, gt, LossConfig(iou_head_weight=0), betti_on=False)
    on = segmentation_loss(logits, gt, LossConfig(iou_head_weight=0), betti_on=True)
    assert "betti" not in off.parts and on.parts["betti"] > 1.0
    assert on.total.item() == pytest.approx(off.total.item() + 0.375 * on.parts["betti"], rel=1e-5)
    zero = segmentation_loss(logits, gt, LossConfig(iou_head_weight=0, betti_weight=0.0), betti_on=True)
    assert "betti" not in zero.parts


def test_betti_resolution_never_finer_than_logits():
    p, t = resample_for_betti(torch.rand(2, 1, 16, 16), torch.ones(2, 1, 64, 64), 256)
    assert p.shape == t.shape == (2, 1, 16, 16)
    thin = torch.zeros(1, 1, 64, 64)
    thin[..., 30:33, :] = 1  # 3 px line -> 0.75 coverage of one row at 1/4 resolution
    _, t = resample_for_betti(torch.rand(1, 1, 16, 16), thin, 256)
    assert set(t.unique().tolist()) == {0.0, 1.0} and t.sum() == 16


def test_optional_terms():
    gt = _two_lines()
    assert soft_iou_loss(gt, gt).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_iou_loss(1 - gt, gt).item() > 0.9
    broken = gt.clone()
    broken[..., 10:14, 22:26] = 0
    assert component_count_error(broken, gt).tolist() == [0.5]
    assert component_count_error(gt, gt).tolist() == [0.0]
    assert edge_placement_loss(gt, gt).item() == 0.0
    shift1 = edge_placement_loss(torch.roll(gt, 1, -2), gt).item()
    shift3 = edge_placement_loss(torch.roll(gt, 3, -2), gt).item()
    assert 0 < shift1 < shift3
    cfg = LossConfig(iou_head_weight=0, iou_reward=1.0, count_penalty=1.0, epe_penalty=1.0)
    out = SegmentationLoss(cfg)(_logits(broken), gt, betti_on=False)
    assert {"iou_reward", "count", "epe"} <= set(out.parts)
    assert out.parts["count"] > 0


def test_config_validation():
    with pytest.raises(ConfigError, match="filtration"):
        LossConfig(filtration="up")
    with pytest.raises(ConfigError, match="alpha"):
        LossConfig(alpha=1.5)
    assert np.isclose(LossConfig().alpha, 0.6)


def test_padding_counts_lines_that_touch_the_border():
    gt = torch.zeros(1, 1, 32, 32)
    gt[..., 0:20, 8:12] = 1  # two lines hanging from the top border
    gt[..., 0:20, 20:24] = 1
    joined = gt.clone()
    joined[..., 0:4, 12:20] = 1  # bridged along the border
    assert betti_matching_loss(joined, gt, pad=True).item() > 1.0
    # unpadded, lines touching the border enclose no background and the short is invisible
    assert betti_matching_loss(joined, gt, pad=False).item() == 0.0


_PARITY = """
import sys, torch
sys.path.insert(0, {root!r})
from topolosses.losses.betti_matching import BettiMatchingLoss
from samsem.train.losses import betti_matching_loss
g = torch.Generator().manual_seed(0)
worst = 0.0
for filt in ("sublevel", "superlevel", "bothlevels"):
    for push in (True, False):
        for pad in (True, False):
            t = (torch.rand(3, 1, 20, 20, generator=g) > 0.6).float()
            p = (0.6 * t + 0.4 * torch.rand(3, 1, 20, 20, generator=g)).requires_grad_(True)
            ref = BettiMatchingLoss(filtration_type=filt, push_unmatched_to_1_0=push,
                                    barcode_length_threshold=0.1, sphere=pad, include_background=True,
                                    use_base_loss=False, alpha=1.0)(p, t)
            gr, = torch.autograd.grad(ref, p)
            ours = betti_matching_loss(p, t, filt, 0.1, push, pad)
            go, = torch.autograd.grad(ours, p)
            rel = abs(ref.item() - ours.item()) / max(ref.item(), 1e-6)
            worst = max(worst, rel, (gr - go).abs().max().item())
print(worst)
"""


def test_betti_loss_matches_topolosses_reference():
    """Same values and gradients as topolosses' BettiMatchingLoss (run in a subprocess: importing the
    topolosses package loads a second OpenMP runtime, see losses._betti_extension)."""
    import subprocess
    import sys
    from pathlib import Path

    code = _PARITY.format(root=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert float(out.stdout.strip().splitlines()[-1]) < 1e-5
