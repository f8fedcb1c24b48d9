#!/usr/bin/env python
"""Learning curve of a training run: validation and held-out ESD against training minutes.

Reads RUN/log.csv (the validation ESD rate and the training seconds of every epoch) and evaluates every
checkpoint that ``samsem train --keep-checkpoints`` kept (RUN/epochs/epoch_NNN.pt) on the given test
sets with the default two-scale pipeline (sets whose name contains "inverted" with ``--metal dark``),
the first ``--images`` images of each, pooled. Writes RUN/learning_curve.csv and RUN/learning_curve.png
(one line per test set and the validation rate, against cumulative training minutes); a rerun only
evaluates the checkpoints not yet in the CSV.

    python tools/learning_curve.py RUN --tests SET [SET ...] [--images 2]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from samsem.evaluation.esd import ESDConfig, esd
from samsem.io import atomic_path, list_images, read_image, read_mask
from samsem.runtime.config import RunOptions
from samsem.runtime.load import load_pipeline

FIELDS = ("epoch", "train_minutes", "test_set", "esd_rate", "errors", "gt_lines")


def _pairs(folder: Path, n: int) -> list[tuple[Path, Path]]:
    images = list_images([folder / "images"])[:n]
    return [(p, next((folder / "masks").glob(p.stem + ".*"))) for p in images]


def evaluate(checkpoint: Path, folder: Path, n: int) -> tuple[float, int, int]:
    """(ESD rate, errors, ground-truth lines) of ``checkpoint`` on the first ``n`` images of ``folder``."""
    metal = "dark" if "inverted" in folder.name else "bright"
    pipe = load_pipeline(checkpoint, options=RunOptions(metal=metal))
    total = None
    for image, mask in _pairs(folder, n):
        pred = pipe.segment(read_image(image)).mask
        one = esd(pred, read_mask(mask, pred.shape), ESDConfig())
        total = one if total is None else total + one
    assert total is not None
    return total.rate, total.errors, total.gt_lines


def plot(rows: list[dict], path: Path) -> None:
    """ESD rate per test set (and validation) against training minutes, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    for name in dict.fromkeys(r["test_set"] for r in rows):
        part = sorted((r for r in rows if r["test_set"] == name), key=lambda r: float(r["train_minutes"]))
        style = "k-o" if name == "validation" else "-"
        xs = [float(r["train_minutes"]) for r in part]
        ax.plot(
            xs, [float(r["esd_rate"]) for r in part], style, label=name, lw=2 if name == "validation" else 1
        )
    ax.set_xlabel("training minutes (this CPU)")
    ax.set_ylabel("ESD rate (errors / lines)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def save(out: Path, rows: list[dict]) -> None:
    """Write the CSV and, beside it, the plot (each atomically)."""
    with atomic_path(out) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    with atomic_path(out.with_suffix(".png")) as tmp:
        plot(rows, tmp)


def main(argv: list[str] | None = None) -> int:
    """Evaluate the run's kept checkpoints; return the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="run folder of samsem train --keep-checkpoints")
    ap.add_argument("--tests", nargs="+", type=Path, required=True, help="test sets (images/ + masks/)")
    ap.add_argument("--images", type=int, default=2, help="images per test set (default 2)")
    args = ap.parse_args(argv)
    log = args.run / "log.csv"
    if not log.is_file():
        print(f"learning_curve: error: {log}: not found (a samsem train run folder)", file=sys.stderr)
        return 2
    with log.open(encoding="utf-8") as f:
        epochs = list(csv.DictReader(f))
    minutes, elapsed = {}, 0.0
    for row in epochs:
        elapsed += float(row["train_s"])
        minutes[int(row["epoch"])] = elapsed / 60
    out = args.run / "learning_curve.csv"
    validation = [
        dict(
            zip(
                FIELDS,
                (
                    r["epoch"],
                    f"{minutes[int(r['epoch'])]:.2f}",
                    "validation",
                    r["val_rate"],
                    r["val_errors"],
                    r["val_gt_lines"],
                ),
                strict=True,
            )
        )
        for r in epochs
        if r.get("val_rate")
    ]
    rows: list[dict] = []
    if out.is_file():
        with out.open(encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if r["test_set"] != "validation"]
    done = {(int(r["epoch"]), r["test_set"]) for r in rows}
    save(out, rows + validation)
    for row in epochs:
        epoch = int(row["epoch"])
        checkpoint = args.run / "epochs" / f"epoch_{epoch:03d}.pt"
        if not checkpoint.is_file():
            continue
        for folder in args.tests:
            if (epoch, folder.name) in done:
                continue
            rate, errors, lines = evaluate(checkpoint, folder, args.images)
            values = (epoch, f"{minutes[epoch]:.2f}", folder.name, rate, errors, lines)
            rows.append(dict(zip(FIELDS, values, strict=True)))
            print(f"epoch {epoch} ({minutes[epoch]:.1f} min) {folder.name}: ESD {rate:.4f}", flush=True)
        save(out, rows + validation)  # after every checkpoint: an interrupted run keeps what it measured
    print(f"wrote {out} and {args.run / 'learning_curve.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
