"""The outputs of segmenting a folder: naming, formats, atomic writes, skip/complete/overwrite, the summary.

One layer used by every segment-to-folder loop (``samsem segment``, server-side jobs, ``samsem client
segment``) so that they name, skip and write files the same way. Per input image ``NAME.EXT``:

* ``NAME.mask.png`` — 0/255 mask; ``NAME.mask.tif`` (tiled, compressed) above :data:`LARGE_PIXELS`;
* ``NAME.preview.png`` — on request (:mod:`samsem.runtime.preview`);
* ``NAME.mask.svg``, ``NAME.mask.geojson``, ``NAME.mask.gds`` — on request: the mask's metal lines as
  polygons (:mod:`samsem.vector`; named ``.mask.*`` so that they are never taken for ground-truth labels);
* ``NAME.report.json`` — written last.

Every file is written atomically (temporary file, then rename), so an interrupted run leaves whole
files only. An image is *finished* when every requested output exists; a rerun skips finished images,
segments images without a mask or report, and writes only the missing derived outputs (preview, vector
files) of the others from their existing mask (:func:`complete_outputs`); ``overwrite`` recomputes all.
A run killed outright (SIGKILL, power loss) can leave temporary files (``.NAME.mask.<hex>.tmp.png``);
the next run over the same images removes those of its images (:func:`remove_stale_temps`), and
listings never take them, nor any other output, as inputs (:func:`samsem.io.is_samsem_output`).
Reports that must appear whole or not at all (``samsem evaluate``) are written into a staging folder
that is moved into place at the end (:func:`staged_dir`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from samsem.errors import InputError, SamsemError

if TYPE_CHECKING:
    from samsem.vector import Polygons, VectorOptions

LARGE_PIXELS = 8192 * 8192  # masks of larger images are written as tiled, compressed TIFF


# vector format -> output suffix (after NAME): ".mask.svg" etc., never confused with SVG labels
VECTOR_SUFFIXES = {"svg": ".mask.svg", "geojson": ".mask.geojson", "gds": ".mask.gds"}


@dataclass(frozen=True)
class ImageOutputs:
    """The output paths of one input image (``preview`` None when not requested; ``vectors`` the
    requested (format, path) pairs). ``source``: the input as the user named it when ``input`` is a local
    copy of a remote file (a URI such as s3://…); the report records it as the input."""

    input: Path
    mask: Path
    report: Path
    preview: Path | None = None
    vectors: tuple[tuple[str, Path], ...] = ()
    source: str | None = None

    def requested(self) -> list[Path]:
        """Every requested output path: mask, preview, vector files, report."""
        extra = [self.preview] if self.preview is not None else []
        return [self.mask, *extra, *(p for _, p in self.vectors), self.report]

    def missing(self) -> list[Path]:
        """The requested outputs that do not exist yet."""
        return [p for p in self.requested() if not p.exists()]

    def finished(self) -> bool:
        """True when every requested output exists."""
        return not self.missing()

    def completable(self) -> bool:
        """True when mask and report exist, so missing outputs can be derived from them (no model run)."""
        return self.mask.exists() and self.report.exists()


def image_outputs(
    input_path: Path,
    out_dir: Path,
    height: int,
    width: int,
    preview: bool = False,
    vector: Sequence[str] = (),
) -> ImageOutputs:
    """Output paths of an image of ``height`` x ``width`` pixels named after ``input_path``'s stem;
    ``vector``: requested vector formats (keys of :data:`VECTOR_SUFFIXES`)."""
    stem = input_path.stem
    suffix = ".tif" if height * width > LARGE_PIXELS else ".png"
    return ImageOutputs(
        input_path,
        out_dir / f"{stem}.mask{suffix}",
        out_dir / f"{stem}.report.json",
        out_dir / f"{stem}.preview.png" if preview else None,
        tuple((fmt, out_dir / f"{stem}{VECTOR_SUFFIXES[fmt]}") for fmt in vector),
    )


def plan_image(
    input_path: Path, out_dir: Path, *, preview: bool = False, vector: Sequence[str] = ()
) -> tuple[ImageOutputs, int, int]:
    """(outputs, height, width) of one input, reading only its header; InputError if unreadable."""
    from samsem.io import image_info

    info = image_info(input_path)
    outputs = image_outputs(input_path, out_dir, info.height, info.width, preview, vector)
    return outputs, info.height, info.width


def output_names(stem: str) -> tuple[str, ...]:
    """Every file name samsem may write for an input image named ``stem`` (masks, report, preview,
    vector files)."""
    names = [f"{stem}.mask.png", f"{stem}.mask.tif", f"{stem}.report.json", f"{stem}.preview.png"]
    return (*names, *(f"{stem}{suffix}" for suffix in VECTOR_SUFFIXES.values()))


def remove_stale_temps(out_dir: Path, stems: Iterable[str]) -> int:
    """Remove the temporary files (of :func:`samsem.io.atomic_path`) that a killed run left in
    ``out_dir`` for the outputs of the images named ``stems``; returns how many were removed.

    Only temporary files of those images' outputs are touched: they belong to this run, whose writes
    of the same outputs would replace them anyway."""
    from samsem.io import temp_target

    targets = {name for stem in stems for name in output_names(stem)}
    removed = 0
    try:
        entries = list(os.scandir(out_dir))
    except OSError:  # missing, not a folder, unreadable: nothing to remove
        return 0
    for entry in entries:
        if temp_target(entry.name) in targets and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(OSError):  # gone already, or a read-only folder (said on writing)
                os.unlink(entry.path)
                removed += 1
    return removed


@contextlib.contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """A staging folder beside ``final`` to write a report into: when the block ends normally its files
    are moved into ``final`` (replacing files of the same name), otherwise it is removed and ``final``
    stays as it was. The staging folder is named ``.NAME.<hex>.tmp`` (a samsem temporary name)."""
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise InputError(final, "is not a directory (a file is in the way)", "an output directory")
    stage = final.parent / f".{final.name}.{uuid.uuid4().hex[:12]}.tmp"
    prepare_dir(stage)
    try:
        yield stage
        prepare_dir(final)
        for src in sorted(stage.rglob("*")):
            if src.is_file():
                dst = final / src.relative_to(stage)
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


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


def check_dir(out_dir: Path) -> None:
    """InputError when ``out_dir`` cannot become a directory (it, or its nearest existing parent, is not
    one); creates nothing, so a run can check its output folder before loading a model."""
    for p in (out_dir, *out_dir.parents):
        if p.exists():
            if not p.is_dir():
                what = "is a file" if p == out_dir else f"lies under {p}, which is a file"
                raise InputError(out_dir, f"{what}, not a directory", "an output directory")
            return


def prepare_dir(out_dir: Path) -> None:
    """Create the output folder; InputError when the path (or a parent) is a file or the folder cannot
    be created (read-only file system, no permission)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(
            out_dir, "is not a directory (a file is in the way)", "an output directory"
        ) from None
    except OSError as exc:
        raise InputError(out_dir, f"cannot create the output directory ({exc.strerror or exc})") from None


def write_outputs(
    outputs: ImageOutputs,
    mask: np.ndarray,
    report: Mapping[str, Any],
    *,
    image: np.ndarray | None = None,
    protect: Iterable[Path] = (),
    vector_options: VectorOptions | None = None,
) -> dict[str, Any]:
    """Write the mask, the preview (when requested; needs ``image``), the vector files (when requested;
    ``vector_options`` sets tolerance, scale and GDS layer) and the report, in that order.

    mask: (H, W) uint8 {0, 1}; report: the image's report as JSON, to which the input path and the
    output file names are added. ``protect``: paths never to overwrite (the inputs). Returns the report
    as written.
    """
    from samsem.io import write_json, write_mask

    write_mask(outputs.mask, mask, protect=protect)
    written = {**report, "input": outputs.source or str(outputs.input), "mask": outputs.mask.name}
    if outputs.preview is not None:
        if image is None:
            raise ValueError("a preview needs the image")
        _write_preview(outputs.preview, image, mask, written)
    if outputs.vectors:
        _write_vectors(outputs, dict(outputs.vectors), partial(_polygons_of, mask), written, vector_options)
    write_json(outputs.report, written)  # last
    return written


def complete_outputs(
    outputs: ImageOutputs, *, vector_options: VectorOptions | None = None, image: np.ndarray | None = None
) -> dict[str, Any]:
    """Write the missing preview and vector files of an image whose mask and report exist, from them
    (the image is read for a preview unless given), then the report with their names added.

    The mask is read once; a TIFF mask is vectorized band by band (bounded memory). Returns the report.
    """
    import json

    from samsem.io import read_image, read_mask, write_json

    try:
        report = json.loads(outputs.report.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        reason = f"cannot read the existing report ({exc})"
        raise InputError(outputs.report, reason, "a report.json written by samsem, or --overwrite") from None
    mask: np.ndarray | None = None
    if outputs.preview is not None and not outputs.preview.exists():
        mask = read_mask(outputs.mask)
        _write_preview(outputs.preview, read_image(outputs.input) if image is None else image, mask, report)
    todo = {fmt: p for fmt, p in outputs.vectors if not p.exists()}
    if todo:
        if mask is not None:
            polygons = partial(_polygons_of, mask)
        else:
            polygons = partial(_polygons_of_file, outputs.mask)
        _write_vectors(outputs, todo, polygons, report, vector_options)
    write_json(outputs.report, report)
    return report


def _write_preview(path: Path, image: np.ndarray, mask: np.ndarray, report: dict[str, Any]) -> None:
    import cv2

    from samsem.io import atomic_path
    from samsem.runtime.preview import preview_image

    ok, buf = cv2.imencode(".png", preview_image(image, mask, report))
    if not ok:
        raise InputError(path, "OpenCV could not encode the preview")
    with atomic_path(path) as tmp:  # written by Python, so that a full disk raises (cv2.imwrite says False)
        tmp.write_bytes(buf.data)
    report["preview"] = path.name


def _polygons_of(mask: np.ndarray) -> Polygons:
    from samsem.vector import extract

    return extract(mask)


def _polygons_of_file(path: Path) -> Polygons:
    """Exact polygons of a mask file, read band by band (TIFF: only one band of rows in memory)."""
    from samsem.io import image_info
    from samsem.vector import extract_bands, iter_bands

    return extract_bands(iter_bands(path), image_info(path).width)


def _write_vectors(
    outputs: ImageOutputs,
    todo: dict[str, Path],
    polygons: Callable[[], Polygons],
    report: dict[str, Any],
    options: VectorOptions | None,
) -> None:
    """Simplify the exact polygons once and write each format in ``todo``; record them in ``report``."""
    from samsem.vector import FORMATS, simplify

    opts = replace(options or default_vector_options(), formats=tuple(todo))
    polys = simplify(polygons(), opts.tolerance_px, border=opts.esd_border, min_area=opts.esd_min_area)
    stem = outputs.input.stem
    recorded = dict(report.get("vectors") or {})
    for fmt, path in todo.items():
        FORMATS[fmt][1](polys, path, stem, opts)
        recorded[fmt] = {"file": path.name, **vector_settings(fmt, opts)}
    report["vectors"] = recorded


def default_vector_options() -> VectorOptions:
    """VectorOptions with samsem.vector's defaults (imported lazily: gdstk/numba kernels load on use)."""
    from samsem.vector import VectorOptions

    return VectorOptions()


def vector_settings(fmt: str, options: VectorOptions) -> dict[str, Any]:
    """The settings a vector file of format ``fmt`` was written with (recorded in the report)."""
    out: dict[str, Any] = {"tolerance_px": options.tolerance_px}
    if fmt == "gds":
        out |= {"nm_per_px": options.nm_per_px, "layer": options.gds_layer, "datatype": options.gds_datatype}
    return out


# errno of a failed write -> why no later output can be written either: the run stops there
RUN_STOPPING_ERRORS: dict[int, str] = {
    errno.ENOSPC: "no space left on the output file system",
    errno.EDQUOT: "disk quota exceeded on the output file system",
    errno.EFBIG: "file size limit exceeded (ulimit -f, or the file system's largest file)",
    errno.EROFS: "the output file system is read-only",
    errno.EACCES: "no permission to write in the output directory",
    errno.EPERM: "no permission to write in the output directory",
}


@dataclass
class RunSummary:
    """Counts of a folder run: segmented, completed (missing outputs written from the existing mask),
    skipped (every output exists) and failed (name -> reason); ``stopped``: why the run ended early
    (:meth:`fail`), ``not_tried``: the inputs it left untouched then."""

    done: int = 0
    skipped: int = 0
    completed: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    stopped: str | None = None
    not_tried: list[str] = field(default_factory=list)

    def fail(self, name: str, exc: OSError | SamsemError) -> bool:
        """Record that input ``name`` failed (bad input, or its outputs could not be written); True when the
        run must stop (an error of the output location, :data:`RUN_STOPPING_ERRORS`), False when only this
        input failed."""
        if isinstance(exc, SamsemError):
            self.failures[name] = str(exc)
            return False
        stop = RUN_STOPPING_ERRORS.get(exc.errno or 0)
        self.failures[name] = f"cannot write its outputs: {stop or exc.strerror or exc}"
        if stop is not None:
            self.stopped = stop
        return stop is not None

    def report(self, command: str, out_dir: Path, stream: TextIO | None = None) -> int:
        """Print the summary line, every failure and (after a stop) the inputs not tried (to stderr by
        default); returns the exit code (1 when any image failed)."""
        stream = stream or sys.stderr
        elapsed = time.perf_counter() - self.started
        completed = f"{self.completed} completed from existing masks, " if self.completed else ""
        not_tried = f", {len(self.not_tried)} not tried" if self.stopped is not None else ""
        print(
            f"{command}: {self.done} segmented, {completed}{self.skipped} skipped (all outputs exist), "
            f"{len(self.failures)} failed{not_tried} in {elapsed:.1f} s -> {out_dir}",
            file=stream,
        )
        for name, msg in self.failures.items():
            print(f"  FAILED {name}: {msg}", file=stream)
        if self.stopped is not None:
            print(f"  STOPPED: {self.stopped}; rerun when fixed (finished images are skipped)", file=stream)
            for name in self.not_tried:
                print(f"  NOT TRIED {name}", file=stream)
        return 1 if self.failures else 0
