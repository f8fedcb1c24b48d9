#!/usr/bin/env python
"""ESD rate of a model's two-scale pipeline at several mask thresholds, per test folder and pooled.

Tune the threshold on validation folders (training distribution, unseen seeds), never on the held-out
sets. Folders are `samsem synth` output (images/, masks/).

    python tools/threshold_sweep.py --thresholds 0.4,0.5,0.6,0.7 val/*/ [--model BUNDLE]
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from samsem.evaluation.esd import ESDConfig, ESDResult, esd
from samsem.io import list_images, read_image, read_mask
from samsem.runtime.load import load_pipeline
from samsem.runtime.pipeline import Pipeline


def _cell(threshold: float, r: ESDResult) -> str:
    return f"{threshold}: {r.rate:.4f} ({r.opens}/{r.shorts}/{r.false_positives}/{r.false_negatives})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--thresholds", default="0.4,0.5,0.6,0.7", help="comma-separated list")
    ap.add_argument("--model", default=None, help="bundle or checkpoint (default: the bundled default model)")
    args = ap.parse_args()
    base = load_pipeline(args.model)
    pipes = {
        float(t): Pipeline(base.model1, base.model2, replace(base.config, threshold=float(t)), base.info)
        for t in args.thresholds.split(",")
    }
    empty = ESDResult(0, 0, 0, 0, 0, 0, 0)
    pooled = dict.fromkeys(pipes, empty)
    print("ESD rate (opens/shorts/false positives/false negatives) per threshold")
    for folder in args.folders:
        masks = {p.stem: p for p in (folder / "masks").iterdir()}
        cells = []
        for t, pipe in pipes.items():
            r = empty
            for path in list_images([folder / "images"]):
                image = read_image(path)
                r = r + esd(pipe.segment(image).mask, read_mask(masks[path.stem], image.shape), ESDConfig())
            pooled[t] = pooled[t] + r
            cells.append(_cell(t, r))
        print(f"{folder.name:<24}", "  ".join(cells), flush=True)
    print(f"{'pooled':<24}", "  ".join(_cell(t, r) for t, r in pooled.items()))


if __name__ == "__main__":
    main()
