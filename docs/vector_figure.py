"""Draw docs/vector_example.png: the bundled example image, its mask, and the mask's GDSII file as KLayout
renders it (headless, with the klayout package's LayoutView).

    python docs/vector_figure.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np

from samsem.io import read_image, read_mask
from samsem.vector import VectorOptions, write_vectors

ROOT = Path(__file__).resolve().parents[1]
CROP = (slice(0, 384), slice(0, 384))  # rows, cols of the 1024x1024 example
PANEL = 400  # pixels per panel


def _label(panel: np.ndarray, text: str) -> np.ndarray:
    out = cv2.cvtColor(panel, cv2.COLOR_GRAY2BGR) if panel.ndim == 2 else panel.copy()
    cv2.rectangle(out, (0, 0), (8 + 9 * len(text), 22), (255, 255, 255), -1)
    cv2.putText(out, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def main() -> None:
    import klayout.db as kdb
    import klayout.lay as lay

    image = read_image(ROOT / "examples/images/sem_medium.png")[CROP]
    mask = read_mask(ROOT / "examples/masks/sem_medium.png")[CROP]
    with tempfile.TemporaryDirectory() as tmp:
        opts = VectorOptions(formats=("gds",), tolerance_px=1.0, nm_per_px=4.0, gds_layer=10)
        gds = write_vectors(mask, tmp, "sem_medium", opts)["gds"]
        view = lay.LayoutView()
        view.load_layout(str(gds), True)
        view.max_hier()
        h, w = mask.shape
        um = opts.nm_per_px / 1000  # the image spans x in [0, w], y in [-h, 0] pixels, in micrometres
        view.zoom_box(kdb.DBox(0, -h * um, w * um, 0))
        png = Path(tmp) / "gds.png"
        view.save_image(str(png), PANEL, PANEL)
        rendered = cv2.imread(str(png), cv2.IMREAD_COLOR)
    size = (PANEL, PANEL)
    panels = [
        _label(cv2.resize(image, size, interpolation=cv2.INTER_AREA), "SEM image"),
        _label(cv2.resize(mask * 255, size, interpolation=cv2.INTER_NEAREST), "mask"),
        _label(rendered, "GDSII in KLayout (tolerance 1 px)"),
    ]
    gap = np.full((PANEL, 6, 3), 255, np.uint8)
    figure = np.hstack([panels[0], gap, panels[1], gap, panels[2]])
    out = ROOT / "docs" / "vector_example.png"
    cv2.imwrite(str(out), figure, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
