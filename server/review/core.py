"""Review of a `samsem segment` output folder: the queue of patches that need a look, per-patch
corrections saved atomically (the original mask kept as NAME.mask.orig.SUFFIX) and the audit log
``review.jsonl`` (one JSON object a line: who, when, image, patch, action)."""

from __future__ import annotations

import getpass
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from samsem.errors import InputError
from samsem.io import atomic_path, read_mask, write_mask

AUDIT_LOG = "review.jsonl"
# the other segmentations a patch can be replaced by: each a `samsem segment` output folder given by the user
ALTERNATIVE_SOURCES = ("model1", "model2", "fallback")


@dataclass(frozen=True)
class QueueItem:
    """One patch to review: image stem, patch index, box [y0, x0, y1, x1], its record's flag, the
    scales' disagreement (1 - agreement, 0 when unknown) and score (None when unknown)."""

    image: str
    index: int
    box: tuple[int, int, int, int]
    source: str
    flagged: bool
    disagreement: float
    score: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "index": self.index,
            "box": list(self.box),
            "source": self.source,
            "flagged": self.flagged,
            "disagreement": self.disagreement,
            "score": self.score,
        }


def reports(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Image stem -> its NAME.report.json, for every report in ``out_dir``; InputError on a bad one."""
    found = {}
    for path in sorted(out_dir.glob("*.report.json")):
        try:
            found[path.name[: -len(".report.json")]] = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise InputError(path, f"unreadable report ({e})", "the JSON `samsem segment` writes") from e
    if not found:
        raise InputError(out_dir, "no NAME.report.json", "a `samsem segment` output folder")
    return found


def queue(out_dir: Path) -> list[QueueItem]:
    """Every patch of every image, flagged first, then the largest scale disagreement, then the lowest
    score (unknown scores last), ties by image and index."""
    items = []
    for stem, report in reports(out_dir).items():
        for p in report.get("patches", []):
            agreement = p.get("agreement")
            items.append(
                QueueItem(
                    stem,
                    int(p["index"]),
                    tuple(int(v) for v in p["box"]),  # type: ignore[arg-type]
                    str(p.get("source")),
                    bool(p.get("flagged")),
                    0.0 if agreement is None else 1.0 - float(agreement),
                    None if p.get("score") is None else float(p["score"]),
                )
            )
    return sorted(
        items,
        key=lambda q: (
            not q.flagged,
            -q.disagreement,
            np.inf if q.score is None else q.score,
            q.image,
            q.index,
        ),
    )


def mask_path(out_dir: Path, stem: str) -> Path:
    """The mask file of image ``stem`` (NAME.mask.png or NAME.mask.tif); InputError if there is none."""
    for suffix in (".png", ".tif"):
        path = out_dir / f"{stem}.mask{suffix}"
        if path.exists():
            return path
    raise InputError(out_dir, f"no mask for image {stem!r}", f"{stem}.mask.png or .tif")


def patch_box(out_dir: Path, stem: str, index: int) -> tuple[int, int, int, int]:
    """Box [y0, x0, y1, x1] of patch ``index`` of image ``stem``; InputError if there is no such patch."""
    report = reports(out_dir).get(stem)
    if report is None:
        raise InputError(out_dir, f"no report for image {stem!r}")
    for p in report.get("patches", []):
        if int(p["index"]) == index:
            return tuple(int(v) for v in p["box"])  # type: ignore[return-value]
    raise InputError(out_dir / f"{stem}.report.json", f"no patch {index}")


def log(out_dir: Path, stem: str, index: int, action: str, who: str | None = None) -> dict[str, Any]:
    """Append one decision to ``review.jsonl`` (flushed and fsynced) and return it."""
    entry = {
        "who": who or getpass.getuser(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "image": stem,
        "patch": index,
        "action": action,
    }
    with open(out_dir / AUDIT_LOG, "a") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return entry


def accept(out_dir: Path, stem: str, index: int, who: str | None = None) -> dict[str, Any]:
    """Record that patch ``index`` of ``stem`` was accepted as it is."""
    patch_box(out_dir, stem, index)
    return log(out_dir, stem, index, "accept", who)


def replace(
    out_dir: Path, stem: str, index: int, patch: np.ndarray, action: str, who: str | None = None
) -> dict[str, Any]:
    """Replace patch ``index`` of ``stem``'s mask by ``patch`` (bool (h, w) of the box), atomically; the
    first correction keeps the run's mask as NAME.mask.orig.SUFFIX. ``action`` names the correction in
    the log (e.g. ``replace:model1``, ``brush``)."""
    y0, x0, y1, x1 = patch_box(out_dir, stem, index)
    if patch.shape != (y1 - y0, x1 - x0):
        raise InputError(None, f"{stem} patch {index}: a {patch.shape} mask", f"{(y1 - y0, x1 - x0)}")
    path = mask_path(out_dir, stem)
    mask = read_mask(path)
    orig = path.with_name(f"{stem}.mask.orig{path.suffix}")
    if not orig.exists():
        with atomic_path(orig) as tmp:
            tmp.write_bytes(path.read_bytes())
    mask[y0:y1, x0:x1] = patch.astype(bool)
    write_mask(path, mask)
    return log(out_dir, stem, index, action, who)


def replace_from(
    out_dir: Path,
    stem: str,
    index: int,
    other: Path,
    who: str | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """Replace patch ``index`` of ``stem`` by the same box of the mask file ``other`` (e.g. a
    `samsem segment --single-scale 1` run's mask); logged as ``replace:LABEL`` (default: the file)."""
    y0, x0, y1, x1 = patch_box(out_dir, stem, index)
    mask = read_mask(other, read_mask(mask_path(out_dir, stem)).shape)
    return replace(out_dir, stem, index, mask[y0:y1, x0:x1], f"replace:{label or other}", who)


def decisions(out_dir: Path) -> list[dict[str, Any]]:
    """The entries of ``review.jsonl``, oldest first (none when there is no log yet)."""
    path = out_dir / AUDIT_LOG
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


def summary(out_dir: Path) -> dict[str, Any]:
    """What was reviewed: per action the number of decisions, and the patches reviewed of all."""
    entries = decisions(out_dir)
    actions: dict[str, int] = {}
    for e in entries:
        kind = e["action"].split(":", 1)[0]
        actions[kind] = actions.get(kind, 0) + 1
    reviewed = {(e["image"], e["patch"]) for e in entries}
    return {"patches": len(queue(out_dir)), "reviewed": len(reviewed), "actions": actions}
