"""Pictures of an ESD evaluation: the per-image error overlay and the errors-per-image histogram.

Colours (RGB): predicted lines are filled white when correct, red when a short, blue when part of an open,
green when a false positive and grey when ignored or below min_area; ground-truth lines show as a dark
grey underlay, missed ones (false negatives) are outlined yellow; the ignored border band is dimmed.
:func:`overlay_with_legend` adds a legend band below with these meanings and the image's counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numba as nb
import numpy as np

from samsem.evaluation.esd import ESDDetails, ESDResult, GTClass, PredClass
from samsem.legend import LegendEntry, add_legend

# RGB colour of each predicted-line class, indexed by PredClass
PRED_COLOURS: dict[PredClass, tuple[int, int, int]] = {
    PredClass.NONE: (0, 0, 0),
    PredClass.CORRECT: (255, 255, 255),
    PredClass.SHORT: (255, 0, 0),
    PredClass.OPEN: (0, 80, 255),
    PredClass.FALSE_POSITIVE: (0, 255, 0),
    PredClass.IGNORED: (140, 140, 140),
    PredClass.SMALL: (140, 140, 140),
}
GT_COLOUR = (70, 70, 70)
MISSED_COLOUR = (255, 255, 0)


@dataclass(frozen=True)
class OverlayConfig:
    """``dim``: brightness factor of the ignored border band; ``outline_px``: missed-line outline width."""

    dim: float = 0.4
    outline_px: int = 3


@nb.njit(cache=True)
def _fill(pred_labels, pred_rgb, gt_labels, gt_rgb, missed_of_gt, image, missed) -> None:
    h, w = pred_labels.shape
    for y in range(h):
        for x in range(w):
            p = pred_labels[y, x]
            g = gt_labels[y, x]
            if p > 0:
                for c in range(3):
                    image[y, x, c] = pred_rgb[p, c]
            elif g > 0:
                for c in range(3):
                    image[y, x, c] = gt_rgb[c]
            missed[y, x] = missed_of_gt[g]


@nb.njit(cache=True)
def _outline_and_dim(image, missed, grown, missed_rgb, b: int, dim: float) -> None:
    h, w = missed.shape
    for y in range(h):
        in_rows = b <= y < h - b
        for x in range(w):
            if grown[y, x] and not missed[y, x]:
                for c in range(3):
                    image[y, x, c] = missed_rgb[c]
            if not (in_rows and b <= x < w - b):
                for c in range(3):
                    image[y, x, c] = np.uint8(image[y, x, c] * dim)


def render_overlay(details: ESDDetails, cfg: OverlayConfig = OverlayConfig()) -> np.ndarray:
    """Colour overlay of an ESD evaluation: (H, W, 3) uint8 RGB (colours in the module docstring)."""
    h, w = details.pred_labels.shape
    lut = np.zeros((len(PredClass), 3), np.uint8)
    for cls, colour in PRED_COLOURS.items():
        lut[cls] = colour
    pred_rgb = lut[details.pred_class]  # (n_pred + 1, 3) colour of each predicted line
    missed_of_gt = (details.gt_class == GTClass.FALSE_NEGATIVE).view(np.uint8)
    image = np.zeros((h, w, 3), np.uint8)
    missed = np.zeros((h, w), np.uint8)
    gt_rgb = np.array(GT_COLOUR, np.uint8)
    _fill(details.pred_labels, pred_rgb, details.gt_labels, gt_rgb, missed_of_gt, image, missed)
    size = 2 * cfg.outline_px + 1
    grown = cv2.dilate(missed, np.ones((size, size), np.uint8)) if cfg.outline_px > 0 else missed
    b = details.config.border
    _outline_and_dim(image, missed, grown, np.array(MISSED_COLOUR, np.uint8), b, cfg.dim)
    return image


def overlay_legend(details: ESDDetails, cfg: OverlayConfig = OverlayConfig()) -> list[LegendEntry]:
    """The legend of :func:`render_overlay` (RGB colours) with the image's counts."""
    r = details.result
    n_pred = np.bincount(details.pred_class[1:], minlength=len(PredClass))
    grey = PRED_COLOURS[PredClass.IGNORED]
    d = int(255 * cfg.dim)
    return [
        LegendEntry(PRED_COLOURS[PredClass.CORRECT], f"correct line (lines ok: {r.gt_lines_ok})"),
        LegendEntry(PRED_COLOURS[PredClass.SHORT], f"short ({r.shorts})"),
        LegendEntry(PRED_COLOURS[PredClass.OPEN], f"part of an open (opens: {r.opens})"),
        LegendEntry(PRED_COLOURS[PredClass.FALSE_POSITIVE], f"false positive ({r.false_positives})"),
        LegendEntry(MISSED_COLOUR, f"missed ground-truth line ({r.false_negatives})", "outline"),
        LegendEntry(GT_COLOUR, "ground truth (not covered)"),
        LegendEntry(
            grey,
            f"not counted: in the band or on ignored lines ({n_pred[PredClass.IGNORED]}), "
            f"< {details.config.min_area} px ({n_pred[PredClass.SMALL]})",
        ),
        LegendEntry((d, d, d), f"border band, {details.config.border} px (dimmed)"),
    ]


def overlay_with_legend(details: ESDDetails, cfg: OverlayConfig = OverlayConfig()) -> np.ndarray:
    """:func:`render_overlay` with the legend band below: (H + h, max(W, 560), 3) uint8 RGB; the overlay
    keeps its pixels in the top-left (H, W) corner."""
    title = f"ESD rate {r.rate:.3f}" if (r := details.result).gt_lines else "ESD"
    return add_legend(render_overlay(details, cfg), overlay_legend(details, cfg), title=title)


def write_png(path: str | Path, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 RGB or (H, W) uint8 image as PNG, atomically."""
    from samsem.io import atomic_path

    data = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, buf = cv2.imencode(".png", data)
    if not ok:
        raise OSError(f"PNG encoding failed for {path}")
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(buf.tobytes())


def write_error_histogram(
    path: str | Path, names: Sequence[str], results: Sequence[ESDResult], worst: int = 40
) -> None:
    """Write a PNG with two panels: a histogram of ESD errors per image, and the ``worst`` images' error
    counts stacked by kind (opens, shorts, false positives, false negatives), most errors first."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from samsem.io import atomic_path

    errors = np.array([r.errors for r in results], np.int64)
    fig, (ax_hist, ax_bar) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [1, 2]})
    top = int(errors.max()) if errors.size else 0
    width = max(1, math.ceil((top + 1) / 30))  # integer bins from 0, at most about 30 of them
    bins = np.arange(0, top + width + 1, width) - 0.5
    ax_hist.hist(errors, bins=bins, color="#555555", edgecolor="white")
    ax_hist.set_xlabel("ESD errors per image")
    ax_hist.set_ylabel("images")
    ax_hist.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_hist.set_title(f"{len(results)} images, {int(errors.sum())} errors")
    order = np.argsort(-errors, kind="stable")[:worst]
    x = np.arange(order.size)
    bottom = np.zeros(order.size)
    kinds = (
        ("opens", "opens", "#2050ff"),
        ("shorts", "shorts", "#e02020"),
        ("false_positives", "false positives", "#20b020"),
        ("false_negatives", "false negatives", "#d0b000"),
    )
    for field, label, colour in kinds:
        values = np.array([getattr(results[i], field) for i in order], float)
        ax_bar.bar(x, values, bottom=bottom, color=colour, label=label)
        bottom += values
    ax_bar.set_xticks(x, [names[i] for i in order], rotation=90, fontsize=7)
    ax_bar.set_ylabel("ESD errors")
    ax_bar.set_title("images with most errors" if len(results) > worst else "errors per image")
    ax_bar.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
