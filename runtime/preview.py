"""Preview pictures: the image with the mask outline and the flagged / fallback patches marked."""

from __future__ import annotations

import cv2
import numpy as np

OUTLINE = (0, 255, 255)  # BGR yellow: mask outline
FLAGGED = (0, 0, 255)  # red: both models speckled, manual inspection
FALLBACK = (0, 165, 255)  # orange: filled by the classical fallback
MODEL1 = (255, 128, 0)  # blue: patch taken from model 1


def preview_image(image: np.ndarray, mask: np.ndarray, report: dict, max_side: int = 2048) -> np.ndarray:
    """Render a BGR preview (h, w, 3) uint8 scaled so its longer side is at most ``max_side``.

    image: (H, W) uint8/uint16; mask: (H, W) uint8 {0, 1}; report: the pipeline report (patch boxes,
    sources and flags are drawn: red = flagged for inspection, orange = fallback, blue = model 1).
    """
    h, w = image.shape
    scale = min(1.0, max_side / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    lo, hi = report.get("intensity_levels", [float(image.min()), float(image.max()) + 1.0])
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    gray = np.clip((small - lo) / max(hi - lo, 1e-6) * 255.0, 0, 255).astype(np.uint8)
    out = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    small_mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
    edge = cv2.morphologyEx(small_mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    out[edge] = OUTLINE
    for rec in report.get("patches", []):
        color = (
            FLAGGED
            if rec["flagged"]
            else FALLBACK
            if rec["source"] == "fallback"
            else (MODEL1 if rec["source"] == "model1" and report.get("mode") == "two-scale" else None)
        )
        if color is None:
            continue
        y0, x0, y1, x1 = (round(v * scale) for v in rec["box"])
        cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), color, 2 if rec["flagged"] else 1)
    return out
