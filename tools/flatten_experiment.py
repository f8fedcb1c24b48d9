#!/usr/bin/env python
"""Background-flattening experiment (benchmarks/RESULTS.md): ESD rate of a model's two-scale pipeline
on each test folder with the images as they are and with a low-frequency background subtracted.

The background is a morphological opening with a disk of WINDOW px (wider than the widest line) at 1/8
resolution, smoothed and upsampled; the flattened image keeps the input's dtype and median background.

    python tools/flatten_experiment.py heldout/*/ [--window 128] [--model BUNDLE]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from samsem.evaluation.esd import ESDConfig, ESDResult, esd
from samsem.io import list_images, read_image, read_mask
from samsem.runtime.load import load_pipeline


def flatten(image: np.ndarray, window: int, factor: int = 8) -> np.ndarray:
    """(H, W) uint8/uint16 minus its smoothed background opening, plus the background's median."""
    h, w = image.shape
    small = cv2.resize(image.astype(np.float32), (w // factor, h // factor), interpolation=cv2.INTER_AREA)
    k = max(3, window // factor) | 1
    background = cv2.morphologyEx(small, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    background = cv2.resize(
        cv2.GaussianBlur(background, (0, 0), k / 2), (w, h), interpolation=cv2.INTER_LINEAR
    )
    out = image.astype(np.float32) - background + np.median(background)
    return np.clip(out, 0, np.iinfo(image.dtype).max).astype(image.dtype)


def _cell(r: ESDResult) -> str:
    return f"{r.rate:.4f} ({r.opens}/{r.shorts}/{r.false_positives}/{r.false_negatives})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--window", type=int, default=128, help="opening window in px (default 128)")
    ap.add_argument("--model", default=None, help="bundle or checkpoint (default: the bundled default model)")
    args = ap.parse_args()
    pipe = load_pipeline(args.model)
    print("ESD rate (opens/shorts/false positives/false negatives): plain, flattened")
    for folder in args.folders:
        masks = {p.stem: p for p in (folder / "masks").iterdir()}
        plain = flat = ESDResult(0, 0, 0, 0, 0, 0, 0)
        for path in list_images([folder / "images"]):
            image = read_image(path)
            gt = read_mask(masks[path.stem], image.shape)
            plain = plain + esd(pipe.segment(image).mask, gt, ESDConfig())
            flat = flat + esd(pipe.segment(flatten(image, args.window)).mask, gt, ESDConfig())
        print(f"{folder.name:<26} plain {_cell(plain)}  flat {_cell(flat)}", flush=True)


if __name__ == "__main__":
    main()
