"""A legend drawn into a picture: colour swatches with their meaning in a band below the image.

Used by the segmentation preview (:mod:`samsem.runtime.preview`) and the ESD overlay
(:mod:`samsem.evaluation.overlay`) so that a picture explains itself when opened on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX
BACKGROUND = (30, 30, 30)
TEXT = (235, 235, 235)
FRAME = (200, 200, 200)  # thin frame around each swatch, so dark colours show on the dark band
STYLES = ("fill", "outline", "tint")


@dataclass(frozen=True)
class LegendEntry:
    """One swatch: ``colour`` in the picture's channel order, its ``label`` and how the picture shows it
    (``fill``: solid; ``outline``: a line around something; ``tint``: a translucent area over the image)."""

    colour: tuple[int, int, int]
    label: str
    style: str = "fill"

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ValueError(f"legend style must be one of {STYLES}, got {self.style!r}")


def add_legend(
    image: np.ndarray, entries: Sequence[LegendEntry], *, title: str | None = None, min_width: int = 560
) -> np.ndarray:
    """The picture with a legend band below it: (H + h, max(W, min_width), 3) uint8.

    image: (H, W, 3) uint8 in any channel order (the entries' colours use the same). Entries flow left
    to right and wrap; text is sized to the picture's width (readable from 512 to 4096 px wide). The
    picture keeps its pixels in the top-left (H, W) corner; a narrow picture is padded on the right.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 picture, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    width = max(w, min_width)
    scale = float(np.clip(width / 1700.0, 0.42, 1.2))
    thick = 1 if scale < 0.75 else 2
    (_, text_h), base = cv2.getTextSize("Ag", FONT, scale, thick)
    row_h = text_h + base + max(8, round(12 * scale))
    swatch = text_h + base
    gap, margin = round(22 * scale) + 6, round(10 * scale) + 4
    items: list[tuple[LegendEntry | None, str, int]] = []  # (entry or None for the title, text, width)
    if title:
        items.append((None, title, cv2.getTextSize(title, FONT, scale, thick)[0][0]))
    for e in entries:
        items.append((e, e.label, swatch + 6 + cv2.getTextSize(e.label, FONT, scale, thick)[0][0]))
    rows: list[list[tuple[LegendEntry | None, str, int]]] = [[]]
    used = margin
    for item in items:
        if rows[-1] and used + item[2] > width - margin:
            rows.append([])
            used = margin
        rows[-1].append(item)
        used += item[2] + gap
    band_h = len(rows) * row_h + margin
    out = np.empty((h + band_h, width, 3), np.uint8)
    out[:] = BACKGROUND
    out[:h, :w] = image
    y = h + margin // 2
    for row in rows:
        x = margin
        text_y = y + (row_h + text_h) // 2 - base // 2
        for entry, text, item_w in row:
            if entry is not None:
                _swatch(out, x, y + (row_h - swatch) // 2, swatch, entry)
                tx = x + swatch + 6
            else:
                tx = x
            cv2.putText(out, text, (tx, text_y), FONT, scale, TEXT, thick, cv2.LINE_AA)
            x += item_w + gap
        y += row_h
    return out


def _swatch(out: np.ndarray, x: int, y: int, size: int, entry: LegendEntry) -> None:
    """Draw one swatch of ``size`` px at (x, y): as the picture shows the colour."""
    box = out[y : y + size, x : x + size]
    if entry.style == "fill":
        box[:] = entry.colour
    elif entry.style == "tint":  # the colour over a mid-grey "image"
        box[:] = (0.65 * np.array((120, 120, 120)) + 0.35 * np.array(entry.colour)).astype(np.uint8)
        cv2.rectangle(out, (x, y), (x + size - 1, y + size - 1), entry.colour, max(1, size // 8))
        return
    else:  # outline
        box[:] = (70, 70, 70)
        cv2.rectangle(out, (x + 1, y + 1), (x + size - 2, y + size - 2), entry.colour, max(2, size // 6))
        return
    cv2.rectangle(out, (x, y), (x + size - 1, y + size - 1), FRAME, 1)
