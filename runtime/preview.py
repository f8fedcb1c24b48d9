"""Preview pictures: the image with the mask outline, the patches that did not come from model 2 tinted,
and a legend band below saying what each colour means. A long strip (more than :data:`WRAP_ASPECT` times
longer than wide) is cut along its length into pieces shown one under the other (beside each other for
a tall strip), so that it stays readable instead of a few pixels thick."""

from __future__ import annotations

import math

import cv2
import numpy as np

from samsem.legend import LegendEntry, add_legend
from samsem.runtime.stages.tiling import Tiling

OUTLINE = (0, 255, 255)  # BGR yellow: mask outline
FLAGGED = (0, 0, 255)  # red: both models speckled, manual inspection
FALLBACK = (255, 0, 255)  # magenta: filled by the classical fallback
MODEL1 = (255, 128, 0)  # blue: patch taken from model 1
TINT = 0.3  # opacity of a patch's colour over the image
WRAP_ASPECT = 8  # pictures longer than this many times their width are wrapped
WRAP_GAP = 8  # pixels between the pieces of a wrapped picture
WRAP_FILL = (64, 64, 64)  # colour between and after the pieces


def _patch_colour(rec: dict, two_scale: bool) -> tuple[int, int, int] | None:
    if rec["flagged"]:
        return FLAGGED
    if rec["source"] == "fallback":
        return FALLBACK
    if rec["source"] == "model1" and two_scale:
        return MODEL1
    return None


def owned_boxes(boxes: list[list[int]], height: int, width: int) -> list[tuple[int, int, int, int]]:
    """The part of each patch box [y0, x0, y1, x1] whose pixels it supplies (stitching gives each pixel
    to the patch whose centre is nearest): (y0, x0, y1, x1) per box, from the grid the boxes form."""
    if not boxes:
        return []
    arr = np.asarray(boxes, np.int64).reshape(-1, 4)
    patch = int(max((arr[:, 2] - arr[:, 0]).max(), (arr[:, 3] - arr[:, 1]).max()))
    ys, xs = np.unique(arr[:, 0]), np.unique(arr[:, 1])
    grid = Tiling(height, width, patch, ys, xs)
    index = {
        (int(b[0]), int(b[1])): (int(o[0]), int(o[1]), int(o[2]), int(o[3]))
        for b, o in zip(grid.boxes, grid.owned, strict=True)
    }
    return [index[(int(b[0]), int(b[1]))] for b in arr]


def preview_image(image: np.ndarray, mask: np.ndarray, report: dict, max_side: int = 2048) -> np.ndarray:
    """Render a BGR preview (h + legend, w, 3) uint8 whose picture part's longer side is at most ``max_side``
    (a long strip wrapped: :func:`wrap_pieces`).

    image: (H, W) uint8/uint16; mask: (H, W) uint8 {0, 1}; report: the pipeline report. The pixels each
    patch supplied (:func:`owned_boxes`) are tinted and framed: blue = taken from model 1, magenta =
    filled by the classical fallback, red = flagged for manual inspection (patches from model 2 are left
    as they are); the mask outline is yellow. A legend with these meanings and the patch counts is drawn
    below the picture.
    """
    h, w = image.shape
    pieces = wrap_pieces(h, w, max_side)
    long, short = max(h, w), min(h, w)
    gaps = (pieces - 1) * WRAP_GAP
    scale = min(1.0, max_side / math.ceil(long / pieces), (max_side - gaps) / (pieces * short))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # shown as it looks: dark-metal images keep their polarity
    lo, hi = sorted(report.get("intensity_levels", [float(image.min()), float(image.max()) + 1.0]))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    gray = np.clip((small - lo) / max(hi - lo, 1e-6) * 255.0, 0, 255).astype(np.uint8)
    out = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    two_scale = report.get("mode") == "two-scale"
    patches = report.get("patches", [])
    owned = owned_boxes([r["box"] for r in patches], h, w)
    marked = []
    for rec, own in zip(patches, owned, strict=True):
        colour = _patch_colour(rec, two_scale)
        if colour is None:
            continue
        y0, x0, y1, x1 = (round(v * scale) for v in own)
        region = out[y0:y1, x0:x1]
        region[:] = ((1 - TINT) * region + TINT * np.array(colour, np.float32)).astype(np.uint8)
        marked.append((rec, colour, (x0, y0, x1, y1)))
    small_mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
    edge = cv2.morphologyEx(small_mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    out[edge] = OUTLINE
    shown = max(math.ceil(max(size) / pieces), pieces * min(size))  # longer side once wrapped
    frame = max(2, round(shown / 512))
    for rec, colour, (x0, y0, x1, y1) in marked:
        width = 2 * frame if rec["flagged"] else frame
        cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), colour, width)
    counts = {
        "model1": sum(r["source"] == "model1" for r in patches),
        "model2": sum(r["source"] == "model2" for r in patches),
        "fallback": sum(r["source"] == "fallback" for r in patches),
        "flagged": sum(bool(r["flagged"]) for r in patches),
    }
    entries = [LegendEntry(OUTLINE, "mask outline (metal)", "outline")]
    if two_scale:
        entries += [
            LegendEntry(MODEL1, f"from model 1, whole image ({counts['model1']} patches)", "tint"),
            LegendEntry((128, 128, 128), f"from model 2, untinted ({counts['model2']})", "tint"),
        ]
    entries += [
        LegendEntry(FALLBACK, f"classical fallback ({counts['fallback']})", "tint"),
        LegendEntry(FLAGGED, f"flagged for manual inspection ({counts['flagged']})", "tint"),
    ]
    if pieces > 1:
        out = _wrap(out, pieces)
    name = str(report.get("name", "")).replace("\\", "/").rsplit("/", 1)[-1]
    wrapped = (
        f"; cut into {pieces} pieces, {'top to bottom' if w >= h else 'left to right'}" if pieces > 1 else ""
    )
    title = f"{name} ({report.get('mode', '')}{wrapped})" if name else None
    return add_legend(out, entries, title=title)


def wrap_pieces(height: int, width: int, max_side: int = 2048) -> int:
    """Into how many pieces a picture of ``height`` x ``width`` is cut: 1 up to :data:`WRAP_ASPECT`, else
    about sqrt(long / short), which makes the wrapped picture roughly square (at most so many that the
    gaps between them take half of ``max_side``)."""
    long, short = max(height, width), min(height, width)
    if long <= WRAP_ASPECT * short:
        return 1
    return min(round(math.sqrt(long / short)), max_side // (2 * WRAP_GAP))


def _wrap(picture: np.ndarray, pieces: int) -> np.ndarray:
    """A wide (H, W, 3) picture cut along W into ``pieces`` stacked top to bottom, :data:`WRAP_GAP` apart;
    a tall one cut along H and placed left to right."""
    tall = picture.shape[0] > picture.shape[1]
    if tall:
        picture = picture.transpose(1, 0, 2)
    h, w = picture.shape[:2]
    step = math.ceil(w / pieces)
    canvas = np.empty((pieces * h + (pieces - 1) * WRAP_GAP, step, 3), np.uint8)
    canvas[:] = WRAP_FILL
    for i in range(pieces):
        part = picture[:, i * step : (i + 1) * step]
        y = i * (h + WRAP_GAP)
        canvas[y : y + h, : part.shape[1]] = part
    return np.ascontiguousarray(canvas.transpose(1, 0, 2)) if tall else canvas
