"""Draw docs/img/real_crop.png: what samsem makes of the shared real SEM crop (../shared/data/real-sem),
with every connected component of a mask in its own colour, so that two lines merged by a short share one
colour and a line broken by an open changes colour.

Panels: the image; 5x5 median + Otsu (the best classical segmenter there); each ``--model`` given (e.g. an
earlier bundle, for comparison); the bundled default model (two-scale, default options).

    python docs/real_crop_figure.py [--model OLD_BUNDLE --label "previous default"]

The crop is HY5SYN data (Rothaug et al., ASHES 2023, CC BY 4.0) as printed by the public repository
chndaz/UNet-integrated-with-multiple-denoising-models; the figure repeats that attribution.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from samsem.io import read_image
from samsem.runtime.load import classical_pipeline, load_pipeline

ROOT = Path(__file__).resolve().parents[1]
CROP = ROOT.parent / "shared" / "data" / "real-sem" / "hy5syn_crop.png"
PANEL = 360
CREDIT = "image: HY5SYN (Rothaug et al., ASHES 2023), CC BY 4.0"


def components(mask: np.ndarray) -> np.ndarray:
    """(H, W) 0/1 mask -> (H, W, 3) BGR: background black, each 8-connected component one colour."""
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    palette = np.random.default_rng(0).integers(70, 256, size=(max(n, 1), 3), dtype=np.uint8)
    palette[0] = 0
    return palette[labels]


def _panel(image: np.ndarray, text: str) -> np.ndarray:
    out = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image
    out = cv2.resize(out, (PANEL, PANEL), interpolation=cv2.INTER_NEAREST)
    cv2.rectangle(out, (0, 0), (8 + 8 * len(text), 20), (255, 255, 255), -1)
    cv2.putText(out, text, (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", default=[], help="another bundle to show (repeatable)")
    parser.add_argument("--label", action="append", default=[], help="its panel title (same order)")
    args = parser.parse_args()
    if not CROP.is_file():
        print(f"{CROP}: not found (the shared real SEM crop lies beside the checkout)", file=sys.stderr)
        return 2
    image = read_image(CROP)
    gray = image if image.dtype == np.uint8 else cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX)
    panels = [_panel(gray.astype(np.uint8), "real SEM crop")]
    median = classical_pipeline("classical:median-otsu").segment(image).mask
    panels.append(_panel(components(median), "median 5x5 + Otsu"))
    labels = args.label + [Path(m).name for m in args.model[len(args.label) :]]
    for model, label in zip(args.model, labels, strict=True):
        panels.append(_panel(components(load_pipeline(model).segment(image).mask), label))
    panels.append(_panel(components(load_pipeline(None).segment(image).mask), "samsem default (two-scale)"))
    gap = np.full((PANEL, 6, 3), 255, np.uint8)
    row = np.hstack([p for panel in panels for p in (panel, gap)][:-1])
    foot = np.full((22, row.shape[1], 3), 255, np.uint8)
    text = CREDIT + "; one colour per connected component"
    cv2.putText(foot, text, (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    out = ROOT / "docs" / "img" / "real_crop.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), np.vstack([row, foot]), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
