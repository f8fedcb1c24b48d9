"""The evaluation report: ESD, pixel and instance metrics of predicted masks against ground truth.

Ground truth and predictions are matched by file name (:func:`files_by_name`, :func:`pair_names`).
:class:`Accumulator` evaluates pairs one by one and writes to the report directory ``per_image.csv``
(one row per image), ``totals.csv`` (one row), ``report.json`` (settings, rows and totals),
``esd_histogram.png`` and ``overlays/NAME.png`` (see :mod:`samsem.evaluation.overlay` for the colours).
Totals pool all images: counts are summed, the ESD rate is total errors / total considered lines, pixel
metrics come from the summed pixel counts and AJI from the summed intersections and unions. An undefined
ESD rate (errors but no considered ground-truth line) is ``inf`` in the CSV files and ``null`` in JSON.
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from samsem import svg
from samsem.errors import InputError
from samsem.evaluation.esd import ESDConfig, ESDResult, esd_details
from samsem.evaluation.metrics import aji_parts, confusion, metrics_from_confusion
from samsem.evaluation.overlay import overlay_with_legend, write_error_histogram, write_png
from samsem.io import atomic_path, image_info, read_mask, write_json

MASK_SUFFIXES = (".png", ".tif", ".tiff")
LAYOUT_SUFFIXES = (".geojson", ".gds", ".gdsii")  # read with samsem.vector.read_layout_mask
GT_SUFFIXES = (*MASK_SUFFIXES, ".svg", *LAYOUT_SUFFIXES)
COUNT_FIELDS = ("opens", "shorts", "false_positives", "false_negatives", "errors")
LINE_FIELDS = ("gt_lines", "gt_lines_ok", "pred_lines")


# ------------------------------------------------------------------------------------------------ inputs


def match_key(path: Path) -> str:
    """Matching name of a file: its stem without a trailing '.mask' (as written by `samsem segment`)."""
    stem = path.stem
    return stem[: -len(".mask")] if stem.endswith(".mask") else stem


@dataclass(frozen=True)
class LayoutOptions:
    """How a GDSII layout becomes a ground-truth mask (see samsem.vector.read_layout_mask): layer,
    datatype and cell, the image's pixel size in nm and the layout position (x, y) in nm of its top-left
    corner."""

    gds_layer: int = 0
    gds_datatype: int = 0
    nm_per_px: float = 1.0
    offset_nm: tuple[float, float] = (0.0, 0.0)
    gds_cell: str | None = None

    def to_json(self) -> dict:
        return {**asdict(self), "offset_nm": list(self.offset_nm)}


def read_gt(path: Path, shape: tuple[int, int], layout: LayoutOptions = LayoutOptions()) -> np.ndarray:
    """Ground truth (H, W) uint8 {0, 1} of the given shape from a mask, SVG label, GeoJSON or GDSII file
    (InputError when it cannot be read or its own size differs)."""
    if path.suffix.lower() in LAYOUT_SUFFIXES:
        from samsem.vector import read_layout_mask

        return read_layout_mask(
            path,
            shape,
            gds_layer=layout.gds_layer,
            gds_datatype=layout.gds_datatype,
            nm_per_px=layout.nm_per_px,
            offset_nm=layout.offset_nm,
            gds_cell=layout.gds_cell,
        )
    return read_mask(path, shape=shape)


def files_by_name(
    folder: Path, suffixes: tuple[str, ...], what: str, masks_only: bool = False
) -> dict[str, Path]:
    """Files of ``folder`` with one of ``suffixes`` by matching name; InputError when none or ambiguous.

    ``folder`` may also be a single file (with one of the suffixes).
    """
    if folder.is_file():
        if folder.suffix.lower() not in suffixes:
            raise InputError(folder, f"unsupported {what} file type {folder.suffix!r}", ", ".join(suffixes))
        return {match_key(folder): folder}
    if not folder.is_dir():
        raise InputError(
            folder, "not found" if not folder.exists() else "is not a directory", f"a {what} directory"
        )
    files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in suffixes)
    if masks_only and any(f.stem.endswith(".mask") for f in files):
        files = [f for f in files if f.stem.endswith(".mask")]
    if not files:
        raise InputError(folder, f"{what} directory holds no files", ", ".join(suffixes))
    found: dict[str, Path] = {}
    for f in files:
        if match_key(f) in found:
            raise InputError(
                f, f"has the same name as {found[match_key(f)].name}", f"one {what} file per name"
            )
        found[match_key(f)] = f
    return found


def pair_names(pred: dict[str, Path], gt: dict[str, Path], pred_dir: Path, gt_dir: Path) -> list[str]:
    """Names present in both; InputError naming every file without a partner."""
    lonely_pred = sorted(set(pred) - set(gt))
    lonely_gt = sorted(set(gt) - set(pred))
    if lonely_pred or lonely_gt:
        parts = []
        if lonely_pred:
            parts.append(f"no ground truth in {gt_dir} for: {', '.join(pred[k].name for k in lonely_pred)}")
        if lonely_gt:
            parts.append(f"no prediction in {pred_dir} for: {', '.join(gt[k].name for k in lonely_gt)}")
        raise InputError(None, "; ".join(parts), "one ground-truth file per prediction, matched by name")
    return sorted(pred)


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of a mask or image file without decoding it (SVG: its width and height)."""
    if path.suffix.lower() == ".svg":
        layout = svg.read_layout(path)
        return layout.height, layout.width
    info = image_info(path)
    return info.height, info.width


def gt_size(path: Path) -> tuple[int, int] | None:
    """(H, W) of a ground-truth file, None for layouts without a size of their own (GDSII, GeoJSON not
    written by samsem), which take the prediction's size."""
    suffix = path.suffix.lower()
    if suffix in (".gds", ".gdsii"):
        return None
    if suffix == ".geojson":
        import json

        try:
            meta = json.loads(path.read_text(encoding="utf-8")).get("samsem") or {}
            return int(meta["height"]), int(meta["width"])
        except (OSError, ValueError, AttributeError, KeyError, TypeError):
            return None  # read_gt reports an unreadable file
    return image_size(path)


def check_sizes(names: list[str], pred: dict[str, Path], gt: dict[str, Path]) -> None:
    """InputError naming every pair whose files differ in size."""
    bad = []
    for name in names:
        ps, gs = image_size(pred[name]), gt_size(gt[name])
        if gs is not None and ps != gs:
            bad.append(f"{pred[name].name} is {ps[0]}x{ps[1]} px but {gt[name].name} is {gs[0]}x{gs[1]} px")
    if bad:
        raise InputError(
            None, "size mismatch: " + "; ".join(bad), "prediction and ground truth of the same size"
        )


# ------------------------------------------------------------------------------------------------ output


class Accumulator:
    """Evaluates image pairs one by one, writes their overlays and collects rows and pooled totals."""

    def __init__(self, out: Path, cfg: ESDConfig) -> None:
        self.out = out
        self.cfg = cfg
        self.rows: list[dict] = []
        self.names: list[str] = []
        self.results: list[ESDResult] = []
        self.total = ESDResult(0, 0, 0, 0, 0, 0, 0)
        self.conf = [0, 0, 0, 0]
        self.aji = [0, 0]

    def add(self, name: str, pred: np.ndarray, gt: np.ndarray) -> dict:
        """Evaluate pred against gt ((H, W) uint8 masks), write the overlay, return the row."""
        details = esd_details(pred, gt, self.cfg)
        conf = confusion(pred, gt)
        inter, union = aji_parts(pred, gt)
        overlay = Path("overlays") / f"{name}.png"
        write_png(self.out / overlay, overlay_with_legend(details))
        r = details.result
        self.total = self.total + r
        self.conf = [a + b for a, b in zip(self.conf, conf, strict=True)]
        self.aji = [self.aji[0] + inter, self.aji[1] + union]
        self.names.append(name)
        self.results.append(r)
        row = {"name": name, "height": int(pred.shape[0]), "width": int(pred.shape[1])}
        row |= self._metrics(r, conf, inter, union)
        row["overlay"] = overlay.as_posix()
        self.rows.append(row)
        return row

    @staticmethod
    def _metrics(r, conf, inter: int, union: int) -> dict:
        d = r.to_dict()
        row = {k: d[k] for k in (*COUNT_FIELDS, *LINE_FIELDS)}
        row["esd_rate"] = d["rate"]
        row["ok_share"] = d["ok_share"]
        row |= metrics_from_confusion(*conf)
        row["aji"] = 1.0 if union == 0 else inter / union
        return row

    def totals(self) -> dict:
        """Pooled totals over every image added."""
        pixels = sum(row["height"] * row["width"] for row in self.rows)
        head = {"name": "total", "images": len(self.rows), "pixels": pixels}
        return head | self._metrics(self.total, self.conf, *self.aji)

    def write(self, settings: dict) -> None:
        """Write per_image.csv, totals.csv, report.json and esd_histogram.png."""
        _write_csv(self.out / "per_image.csv", self.rows)
        totals = self.totals()
        _write_csv(self.out / "totals.csv", [totals])
        write_json(
            self.out / "report.json",
            _json_safe({"settings": settings, "images": self.rows, "totals": totals}),
        )
        write_error_histogram(self.out / "esd_histogram.png", self.names, self.results)


def _write_csv(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _json_safe(obj):
    """Replace non-finite floats (an undefined ESD rate) by None, recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj
