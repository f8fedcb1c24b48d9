"""The outputs of segmenting a folder: naming, formats, atomic writes, skip/overwrite and the summary.

One layer used by every segment-to-folder loop (``samsem segment``, server-side jobs, ``samsem client
segment``) so that they name, skip and write files the same way. Per input image ``NAME.EXT``:

* ``NAME.mask.png`` — 0/255 mask; ``NAME.mask.tif`` (tiled, compressed) above :data:`LARGE_PIXELS`;
* ``NAME.preview.png`` — on request (:mod:`samsem.runtime.preview`);
* ``NAME.report.json`` — written last: its presence marks the image as finished.

Every file is written atomically (temporary file, then rename), so an interrupted run leaves whole
files only and a rerun resumes: images whose outputs all exist are skipped unless ``overwrite``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from samsem.errors import InputError

LARGE_PIXELS = 8192 * 8192  # masks of larger images are written as tiled, compressed TIFF


@dataclass(frozen=True)
class ImageOutputs:
    """The output paths of one input image (``preview`` None when not requested). ``source``: the input
    as the user named it when ``input`` is a local copy of a remote file (a URI such as s3://…); the
    report records it as the input."""

    input: Path
    mask: Path
    report: Path
    preview: Path | None = None
    source: str | None = None

    def finished(self) -> bool:
        """True when every requested output exists (the report is written last)."""
        return all(p.exists() for p in (self.mask, self.report, self.preview) if p is not None)


def image_outputs(
    input_path: Path, out_dir: Path, height: int, width: int, preview: bool = False
) -> ImageOutputs:
    """Output paths of an image of ``height`` x ``width`` pixels named after ``input_path``'s stem."""
    stem = input_path.stem
    suffix = ".tif" if height * width > LARGE_PIXELS else ".png"
    return ImageOutputs(
        input_path,
        out_dir / f"{stem}.mask{suffix}",
        out_dir / f"{stem}.report.json",
        out_dir / f"{stem}.preview.png" if preview else None,
    )


def plan_image(input_path: Path, out_dir: Path, *, preview: bool = False) -> tuple[ImageOutputs, int, int]:
    """(outputs, height, width) of one input, reading only its header; InputError if unreadable."""
    from samsem.io import image_info

    info = image_info(input_path)
    return image_outputs(input_path, out_dir, info.height, info.width, preview), info.height, info.width


def check_distinct_names(files: Iterable[Path]) -> None:
    """InputError when two inputs share a stem (their outputs would collide)."""
    seen: dict[str, Path] = {}
    for f in files:
        if f.stem in seen:
            raise InputError(
                f,
                f"has the same name as {seen[f.stem]}; outputs would collide",
                "input files with distinct names",
            )
        seen[f.stem] = f


def prepare_dir(out_dir: Path) -> None:
    """Create the output folder; InputError when the path (or a parent) is a file."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(
            out_dir, "is not a directory (a file is in the way)", "an output directory"
        ) from None


def write_outputs(
    outputs: ImageOutputs,
    mask: np.ndarray,
    report: Mapping[str, Any],
    *,
    image: np.ndarray | None = None,
    protect: Iterable[Path] = (),
) -> dict[str, Any]:
    """Write the mask, the preview (when requested; needs ``image``) and the report, in that order.

    mask: (H, W) uint8 {0, 1}; report: the image's report as JSON, to which the input path and the
    output file names are added. ``protect``: paths never to overwrite (the inputs). Returns the report
    as written.
    """
    from samsem.io import atomic_path, write_json, write_mask

    write_mask(outputs.mask, mask, protect=protect)
    written = {**report, "input": outputs.source or str(outputs.input), "mask": outputs.mask.name}
    if outputs.preview is not None:
        import cv2

        from samsem.runtime.preview import preview_image

        if image is None:
            raise ValueError("a preview needs the image")
        with atomic_path(outputs.preview) as tmp:
            cv2.imwrite(str(tmp), preview_image(image, mask, written))
        written["preview"] = outputs.preview.name
    write_json(outputs.report, written)  # last: its presence marks the image as finished
    return written


@dataclass
class RunSummary:
    """Counts of a folder run: segmented, skipped (outputs exist) and failed (name -> reason)."""

    done: int = 0
    skipped: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def report(self, command: str, out_dir: Path, stream: TextIO | None = None) -> int:
        """Print the summary line and every failure (to stderr by default); returns the exit code (1 when
        any image failed)."""
        stream = stream or sys.stderr
        elapsed = time.perf_counter() - self.started
        print(
            f"{command}: {self.done} segmented, {self.skipped} skipped (outputs exist), "
            f"{len(self.failures)} failed in {elapsed:.1f} s -> {out_dir}",
            file=stream,
        )
        for name, msg in self.failures.items():
            print(f"  FAILED {name}: {msg}", file=stream)
        return 1 if self.failures else 0
