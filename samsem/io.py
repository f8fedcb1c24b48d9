"""Image, mask and JSON input/output: PNG via OpenCV, TIFF (incl. BigTIFF and tiled) via tifffile.

Reading rules
* Images are returned as (H, W) uint8 or uint16 grayscale. RGB(A) files are converted with the ITU-R BT.601
  luma ``gray = 0.299 R + 0.587 G + 0.114 B`` rounded half up, computed exactly in integers as
  ``(299 R + 587 G + 114 B + 500) // 1000`` in the file's dtype; alpha is dropped. Accepted channel counts are
  1, 3 (RGB) and 4 (RGBA); 1-bit images become uint8 {0, 255}. Stored values are used as they are (a TIFF
  photometric MinIsWhite/palette interpretation is not applied, like tifffile).
* The format is detected from the file's first bytes (a PNG named .tif is read as PNG); the suffix must still
  be one of IMAGE_SUFFIXES (masks: SUPPORTED_SUFFIXES). Of a multi-page TIFF only the first page is read.
  JPEG and BMP images are decoded by OpenCV like PNG (colour converted to gray by the same luma); they
  are inputs only: masks are read and written as PNG/TIFF.
* read_region on TIFF decodes only the strips/tiles that intersect the box, one at a time (uncompressed
  contiguous data is memory-mapped), so memory stays bounded by the box plus one decoded strip/tile; a TIFF
  stored as a single compressed strip is therefore decoded whole. On PNG it decodes the whole file and
  crops (PNG has no random access).
* Every failure (missing, not an image, truncated, corrupt, unsupported type) raises InputError naming the
  file and the reason; no OpenCV/tifffile exception escapes.

Writing rules
* Writes are atomic (temporary file in the same directory, then os.replace) and create parent directories.
* Masks are stored as uint8 {0, 255} so they are viewable; TIFF masks are zlib-compressed.
* TIFF outputs larger than TILED_MIN_PIXELS are tiled (TIFF_TILE) and those whose pixel data exceeds
  BIGTIFF_MIN_BYTES are written as BigTIFF.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import stat
import struct
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np
import tifffile

from samsem.errors import InputError

SUPPORTED_SUFFIXES = (".png", ".tif", ".tiff")  # masks and outputs
IMAGE_SUFFIXES = (*SUPPORTED_SUFFIXES, ".jpg", ".jpeg", ".bmp")  # input images
TILED_MIN_PIXELS = 4096 * 4096  # TIFF outputs with more pixels than this are written tiled
TIFF_TILE = (512, 512)
BIGTIFF_MIN_BYTES = 2**32 - 2**25  # pixel data above this (4 GB minus headroom) is written as BigTIFF
PNG_MAX_PIXELS = 2**30  # OpenCV refuses to decode larger PNGs (CV_IO_MAX_IMAGE_PIXELS)

# atomic_path's temporary files: .STEM.<12 hex>.tmpSUFFIX for the target STEM+SUFFIX
_TEMP_NAME = re.compile(r"^\.(?P<stem>.+)\.[0-9a-f]{12}\.tmp(?P<suffix>\.[^.]*)?$")
_OUTPUT_STEMS = (".mask", ".preview")  # NAME.mask.png|tif, NAME.preview.png
_OUTPUT_SUFFIXES = (".report.json",)
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_BMP_MAGIC = b"BM"
# JPEG start-of-frame markers (baseline, extended, progressive, lossless, ...), not DHT/JPG/DAC
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # IHDR colour type -> channels after decoding
_SAMPLE_KINDS = {1: "unsigned integer", 2: "signed integer", 3: "float", 6: "complex float"}
_EXPECT_DTYPE = "8- or 16-bit unsigned integer pixels"
_EXPECT_CHANNELS = "1 (gray), 3 (RGB) or 4 (RGBA) channels"


@dataclass(frozen=True)
class ImageInfo:
    """Header facts of an image file: size, pixel dtype (uint8/uint16) and channel count (1, 3 or 4)."""

    path: Path
    height: int
    width: int
    dtype: np.dtype
    channels: int


# ----------------------------------------------------------------------------------------------- reading


def image_info(path: str | Path) -> ImageInfo:
    """Read only the header of an image (no pixel decoding) and validate size, dtype and channels."""
    path = _check_input(path, IMAGE_SUFFIXES)
    kind = _sniff(path)
    if kind in _HEADERS:
        return _HEADERS[kind](path)
    with _open_tiff(path) as (_, info):
        return info


def read_image(path: str | Path) -> np.ndarray:
    """Read a grayscale image: (H, W) uint8 or uint16 (RGB(A) converted by BT.601 luma, see module doc)."""
    return _to_gray(_read_raw(path, None))


def read_region(path: str | Path, y: int, x: int, h: int, w: int) -> np.ndarray:
    """Read the box rows y..y+h, columns x..x+w: (h, w) uint8 or uint16, same conversion as read_image.

    For TIFF only the intersecting strips/tiles are read; PNG is decoded whole and cropped.
    """
    return _to_gray(_read_raw(path, (y, x, h, w)))


def read_mask(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a metal mask: (H, W) uint8 {0,1}; any nonzero pixel (in any colour channel) is metal.

    PNG/TIFF masks: alpha is ignored. SVG layouts are rasterized at their own width/height (samsem.svg).
    shape: expected (H, W) of the matching image; a different mask size raises InputError.
    """
    path = _check_input(path, (*SUPPORTED_SUFFIXES, ".svg"))
    if path.suffix.lower() == ".svg":
        from samsem import svg

        layout = svg.read_layout(path)
        _check_shape(path, (layout.height, layout.width), shape)
        return svg.rasterize(layout)
    info = image_info(path)
    _check_shape(path, (info.height, info.width), shape)
    raw = _read_raw(path, None)
    if raw.shape[2] == 1:
        return (raw[:, :, 0] != 0).view(np.uint8)
    return np.any(raw[:, :, :3] != 0, axis=2).view(np.uint8)


def _check_shape(path: Path, actual: tuple[int, int], expected: tuple[int, int] | None) -> None:
    if expected is not None and tuple(actual) != tuple(expected):
        raise InputError(
            path,
            f"mask size {actual[0]}x{actual[1]} does not match image size {expected[0]}x{expected[1]}",
        )


def _check_input(path: str | Path, suffixes: Sequence[str] = SUPPORTED_SUFFIXES) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        raise InputError(path, "is a directory, not an image file")
    if path.suffix.lower() not in suffixes:
        raise InputError(path, f"unsupported file type {path.suffix or '(no suffix)'!r}", ", ".join(suffixes))
    return path


def regular_fd(
    name: str | Path, path: str | Path, flags: int = os.O_RDONLY, dir_fd: int | None = None
) -> int:
    """Descriptor of ``name`` (relative to ``dir_fd`` when given), refusing anything but a regular file
    (FIFO, device, socket) with InputError naming ``path``: opened with O_NONBLOCK and checked on the
    descriptor, so a FIFO swapped in for an input never blocks the caller. Errors of the open itself
    pass through as OSError."""
    fd = os.open(name, flags | os.O_NONBLOCK, dir_fd=dir_fd)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
            raise InputError(path, f"is {kind}, not a regular file", "an image file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular(path: Path) -> BinaryIO:
    """Open ``path`` for reading through :func:`regular_fd` (a regular file only, never blocking on a
    FIFO)."""
    try:
        return open(str(path), "rb", opener=lambda name, flags: regular_fd(name, path, flags))
    except OSError as exc:
        raise InputError(path, f"cannot read file ({exc.strerror or exc})") from None


def _sniff(path: Path) -> str:
    """Return 'png' or 'tiff' from the file's magic bytes."""
    with open_regular(path) as fh:
        try:
            head = fh.read(8)
        except OSError as exc:
            raise InputError(path, f"cannot read file ({exc.strerror or exc})") from None
    if not head:
        raise InputError(path, "empty file (0 bytes)", "a PNG, TIFF, JPEG or BMP image")
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head[:4] in _TIFF_MAGICS:
        return "tiff"
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    if head.startswith(_BMP_MAGIC):
        return "bmp"
    raise InputError(path, f"not a PNG, TIFF, JPEG or BMP image (file starts with {head!r})")


def _validate(path: Path, height: int, width: int, dtype: np.dtype | None, channels: int, what: str) -> None:
    if height <= 0 or width <= 0:
        raise InputError(path, f"zero-sized image ({height}x{width})")
    if dtype is None or np.dtype(dtype) not in (np.uint8, np.uint16, np.bool_):
        raise InputError(path, f"unsupported pixel type {what}", _EXPECT_DTYPE)
    if channels not in (1, 3, 4):
        raise InputError(path, f"unsupported number of channels ({channels})", _EXPECT_CHANNELS)


def _read_raw(path: str | Path, box: tuple[int, int, int, int] | None) -> np.ndarray:
    """Decode (a box of) an image: (H, W, C) uint8/uint16 with C in (1, 3, 4), channels in RGB(A) order."""
    path = _check_input(path, IMAGE_SUFFIXES)
    kind = _sniff(path)
    if kind in _HEADERS:
        info = _HEADERS[kind](path)
        if box is not None:
            _check_box(path, box, info)
        raw = _decode_cv(path, info, kind.upper())
        if box is not None:
            y, x, h, w = box
            raw = raw[y : y + h, x : x + w].copy()
        return raw
    with _open_tiff(path) as (page, info):
        if box is None:
            box = (0, 0, info.height, info.width)
        else:
            _check_box(path, box, info)
        with _tiff_errors(path):
            raw = _tiff_region(page, *box)
    if raw.dtype == np.bool_:
        raw = raw.view(np.uint8) * np.uint8(255)
    return raw


def _check_box(path: Path, box: tuple[int, int, int, int], info: ImageInfo) -> None:
    y, x, h, w = box
    size = f"image size {info.height}x{info.width}"
    if h <= 0 or w <= 0:
        raise InputError(path, f"empty region y={y} x={x} h={h} w={w} requested ({size})")
    if y < 0 or x < 0 or y + h > info.height or x + w > info.width:
        raise InputError(path, f"region y={y} x={x} h={h} w={w} lies outside the image ({size})")


def _to_gray(raw: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (H, W) same dtype; C=3/4 uses exact integer BT.601 luma rounded half up."""
    if raw.shape[2] == 1:
        return raw[:, :, 0]
    acc = raw[:, :, 0].astype(np.uint32) * 299
    acc += raw[:, :, 1].astype(np.uint32) * 587
    acc += raw[:, :, 2].astype(np.uint32) * 114
    acc += 500
    acc //= 1000
    return acc.astype(raw.dtype)


# PNG -----------------------------------------------------------------------------------------------------


def _png_info(path: Path) -> ImageInfo:
    with open_regular(path) as fh:
        head = fh.read(33)
    if len(head) < 33:
        raise InputError(path, f"truncated PNG file ({len(head)} bytes, header incomplete)")
    length, ctype = struct.unpack(">I4s", head[8:16])
    if ctype != b"IHDR" or length != 13:
        raise InputError(path, "corrupt PNG file (first chunk is not a valid IHDR header)")
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    if colour not in _PNG_CHANNELS or depth not in (1, 2, 4, 8, 16):
        raise InputError(path, f"corrupt PNG file (bit depth {depth}, colour type {colour})")
    dtype = np.dtype(np.uint16 if depth == 16 else np.uint8)
    info = ImageInfo(path, height, width, dtype, _PNG_CHANNELS[colour])
    _validate(path, height, width, dtype, info.channels, f"{depth}-bit")
    if height * width > PNG_MAX_PIXELS:
        raise InputError(
            path, f"PNG too large to decode ({height}x{width} > {PNG_MAX_PIXELS} pixels)", "a tiled TIFF"
        )
    return info


def _decode_cv(path: Path, info: ImageInfo, kind: str) -> np.ndarray:
    """Decode a PNG, JPEG or BMP file with OpenCV: (H, W, C) in RGB(A) order."""
    try:
        with open_regular(path) as fh:
            data = np.frombuffer(fh.read(), dtype=np.uint8)
    except OSError as exc:
        raise InputError(path, f"cannot read file ({exc.strerror or exc})") from None
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise InputError(path, f"corrupt or truncated {kind} file (OpenCV: {exc})") from None
    finally:
        cv2.utils.logging.setLogLevel(level)
    if img is None:
        raise InputError(path, f"corrupt or truncated {kind} file (OpenCV could not decode it)")
    if img.shape[:2] != (info.height, info.width) or img.dtype != info.dtype:
        raise InputError(path, f"corrupt {kind} file (decoded pixels do not match the header)")
    if img.ndim == 2:
        return img[:, :, None]
    if img.shape[2] not in (3, 4):
        raise InputError(path, f"unsupported number of channels ({img.shape[2]})", _EXPECT_CHANNELS)
    order = [2, 1, 0, 3][: img.shape[2]]  # BGR(A) -> RGB(A)
    return img[:, :, order]


# JPEG and BMP (headers parsed here, pixels decoded by OpenCV) ------------------------------------------


def _jpeg_info(path: Path) -> ImageInfo:
    """Size and components from the JPEG start-of-frame segment (8-bit samples only)."""
    with open_regular(path) as fh:
        data = fh.read(1 << 20)  # the frame header follows the metadata segments, well inside 1 MB
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            break
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _JPEG_SOF:
            depth, height, width, comps = struct.unpack(">BHHB", data[i + 4 : i + 10])
            info = ImageInfo(path, height, width, np.dtype(np.uint8), 3 if comps == 3 else comps)
            _validate(
                path, height, width, np.dtype(np.uint8) if depth == 8 else None, info.channels, f"{depth}-bit"
            )
            return info
        i += 2 + length
    raise InputError(path, "corrupt or truncated JPEG file (no frame header found)")


def _bmp_info(path: Path) -> ImageInfo:
    """Size and channels from the BMP info header (1-32 bits per pixel; OpenCV decodes to BGR(A))."""
    with open_regular(path) as fh:
        head = fh.read(30)
    if len(head) < 30:
        raise InputError(path, f"truncated BMP file ({len(head)} bytes, header incomplete)")
    width, height, _, bits = struct.unpack("<iiHH", head[18:30])
    height = abs(height)  # negative: rows stored top-down
    channels = 4 if bits == 32 else 3  # OpenCV expands palettes (also gray ones) to BGR
    info = ImageInfo(path, height, width, np.dtype(np.uint8), channels)
    _validate(path, height, width, np.dtype(np.uint8), channels, f"{bits}-bit")
    return info


# format -> header reader of the formats decoded whole by OpenCV
_HEADERS = {"png": _png_info, "jpeg": _jpeg_info, "bmp": _bmp_info}


# TIFF ----------------------------------------------------------------------------------------------------


@contextmanager
def _tiff_errors(path: Path) -> Iterator[None]:
    """Translate any tifffile/codec failure into InputError."""
    try:
        yield
    except (InputError, MemoryError):
        raise
    except Exception as exc:
        name = (
            type(exc).__name__
            if type(exc).__module__ == "builtins"
            else f"{type(exc).__module__}.{type(exc).__name__}"
        )
        raise InputError(path, f"corrupt or truncated TIFF file ({name}: {exc})") from None


@contextmanager
def _open_tiff(path: Path) -> Iterator[tuple[tifffile.TiffPage, ImageInfo]]:
    """Open a TIFF, validate its first page (type, size, data inside the file) and yield (page, info)."""
    fh = open_regular(path)
    with _tiff_errors(path):
        try:
            tif = tifffile.TiffFile(fh)
        except BaseException:
            fh.close()
            raise
    with fh, tif:
        with _tiff_errors(path):
            if len(tif.pages) == 0:
                raise InputError(path, "TIFF file contains no image")
            page = tif.pages.first
            sep, depth, height, width, contig = page.shaped
            dtype = page.dtype
            kind = _SAMPLE_KINDS.get(page.sampleformat, f"sample format {page.sampleformat}")
            bits = f"{page.bitspersample}-bit {kind}"
            offsets = np.asarray(page.dataoffsets, dtype=np.uint64)
            counts = np.asarray(page.databytecounts, dtype=np.uint64)
        if depth != 1:
            raise InputError(path, f"volumetric TIFF (depth {depth}) is not supported", "a 2-D image")
        _validate(path, height, width, dtype, sep * contig, bits)
        info = ImageInfo(
            path, height, width, np.dtype(np.uint8 if dtype == np.bool_ else dtype), sep * contig
        )
        size = os.fstat(fh.fileno()).st_size
        end = int((offsets + counts).max()) if len(offsets) else 0
        if end > size:
            raise InputError(path, f"truncated TIFF file (image data ends at byte {end}, file has {size})")
        yield page, info


def _tiff_region(page: tifffile.TiffPage, y: int, x: int, h: int, w: int) -> np.ndarray:
    """Decode rows y..y+h, cols x..x+w of a TIFF page: (h, w, samples) in the page dtype (native order)."""
    sep, _, height, width, contig = page.shaped
    if page.is_memmappable:
        offset = page.dataoffsets[0]
        if offset + page.nbytes > page.parent.filehandle.size:
            raise InputError(page.parent.filehandle.path, "truncated TIFF file (image data incomplete)")
        mm = page.parent.filehandle.memmap_array(  # the descriptor checked when opened, not the path
            np.dtype(page.dtype).newbyteorder(page.parent.byteorder), (sep, height, width, contig), offset
        )
        part = mm[:, y : y + h, x : x + w, :]
        out = np.moveaxis(part, 0, 2).reshape(h, w, sep * contig).astype(page.dtype)
        del mm, part
        return out
    out = np.full((h, w, sep * contig), page.nodata, dtype=page.dtype)
    if page.is_tiled:
        seg_h, seg_w = page.tilelength, page.tilewidth
    else:
        seg_h, seg_w = min(page.rowsperstrip, height), width
    down, across = -(-height // seg_h), -(-width // seg_w)
    fh = page.parent.filehandle
    for s in range(sep):
        for ty in range(y // seg_h, (y + h - 1) // seg_h + 1):
            for tx in range(x // seg_w, (x + w - 1) // seg_w + 1):
                index = (s * down + ty) * across + tx
                count = page.databytecounts[index]
                if count == 0:
                    continue  # sparse segment: nodata
                fh.seek(page.dataoffsets[index])
                data = fh.read(count)
                decoded, (_, _, sy, sx, _), _ = page.decode(
                    data, index, jpegtables=page.jpegtables, jpegheader=page.jpegheader
                )
                if decoded is None:
                    continue  # nothing decoded: nodata
                seg = decoded[0]  # (seg rows, seg cols, contig samples)
                y0, y1 = max(y, sy), min(y + h, sy + seg.shape[0])
                x0, x1 = max(x, sx), min(x + w, sx + seg.shape[1])
                out[y0 - y : y1 - y, x0 - x : x1 - x, s * contig : (s + 1) * contig] = seg[
                    y0 - sy : y1 - sy, x0 - sx : x1 - sx
                ]
    return out


# ----------------------------------------------------------------------------------------------- writing


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path` (same suffix) to write to; on success it replaces `path`.

    Parent directories are created. On an exception the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(path, "output path is a directory", "a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(path, f"cannot create output directory ({exc.strerror or exc})") from None
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")  # see temp_target
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def temp_target(name: str) -> str | None:
    """The file name a temporary file of :func:`atomic_path` stands for (``.x.mask.<hex>.tmp.png`` ->
    ``x.mask.png``), or None when ``name`` is not one."""
    m = _TEMP_NAME.match(name)
    return None if m is None else m["stem"] + (m["suffix"] or "")


def is_samsem_output(path: str | Path) -> bool:
    """True for the names samsem writes beside images: ``NAME.mask.png|tif``, ``NAME.preview.png``,
    ``NAME.report.json`` and the temporary files of :func:`atomic_path` (see :func:`temp_target`)."""
    name = Path(path).name
    low = name.lower()
    return (
        temp_target(name) is not None
        or low.endswith(_OUTPUT_SUFFIXES)
        or Path(low).stem.endswith(_OUTPUT_STEMS)
    )


def partial_files(directory: str | Path) -> list[Path]:
    """The temporary files :func:`atomic_path` left in ``directory`` (not below it) when its writer died
    before the rename (a killed process); sorted. Only safe to delete when no writer is running there."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if temp_target(p.name) is not None and p.is_file())


def write_mask(path: str | Path, mask: np.ndarray, *, protect: Iterable[Path] = ()) -> Path:
    """Write a mask ((H, W) bool or integer; nonzero = metal) as uint8 {0, 255} PNG or zlib-TIFF."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or not (mask.dtype == np.bool_ or np.issubdtype(mask.dtype, np.integer)):
        raise ValueError(f"mask must be (H, W) bool or integer, got {mask.shape} {mask.dtype}")
    out = (mask != 0).view(np.uint8) * np.uint8(255)
    return _write(path, out, protect, compress=True)


def write_image(path: str | Path, image: np.ndarray, *, protect: Iterable[Path] = ()) -> Path:
    """Write a grayscale image ((H, W) uint8 or uint16) as PNG or TIFF (uncompressed)."""
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"image must be (H, W) uint8 or uint16, got {image.shape} {image.dtype}")
    return _write(path, image, protect, compress=False)


def _write(path: str | Path, array: np.ndarray, protect: Iterable[Path], *, compress: bool) -> Path:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise InputError(
            path,
            f"unsupported output file type {path.suffix or '(no suffix)'!r}",
            ", ".join(SUPPORTED_SUFFIXES),
        )
    _refuse_protected(path, protect)
    if suffix == ".png":
        if array.size > PNG_MAX_PIXELS:
            raise InputError(
                path, f"image too large for PNG ({array.shape[0]}x{array.shape[1]})", "a .tif path"
            )
        ok, buf = cv2.imencode(".png", array)
        if not ok:
            raise InputError(path, "OpenCV could not encode the PNG")
        with atomic_path(path) as tmp:
            tmp.write_bytes(buf.data)  # not ndarray.tofile, whose OSError on a full disk has no errno
        return path
    tiled = array.size > TILED_MIN_PIXELS
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp,
            array,
            photometric="minisblack",
            tile=TIFF_TILE if tiled else None,
            compression="zlib" if compress else None,
            bigtiff=array.nbytes > BIGTIFF_MIN_BYTES,
            metadata=None,
        )
    return path


class Inputs:
    """Files never to overwrite (a run's inputs), indexed once by real path and by file identity (a
    hard link is the same file), so checking an output against them costs the same for any number
    of inputs; pass one as ``protect`` to the writers when writing many outputs."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self.paths = tuple(Path(p) for p in paths)
        self._real = {p.resolve() for p in self.paths}
        self._ids = set()
        for p in self.paths:
            with contextlib.suppress(OSError):
                st = p.stat()
                self._ids.add((st.st_dev, st.st_ino))

    def __iter__(self) -> Iterator[Path]:
        return iter(self.paths)

    def holds(self, path: Path) -> bool:
        """Whether writing ``path`` would overwrite one of the files (a path that does not exist is none
        of them)."""
        try:
            st = path.stat()
        except OSError:
            return False
        return path.resolve() in self._real or (st.st_dev, st.st_ino) in self._ids


def _refuse_protected(path: Path, protect: Iterable[Path]) -> None:
    if not path.exists():  # a fresh output: one stat, whatever ``protect`` holds
        return
    inputs = protect if isinstance(protect, Inputs) else Inputs(protect)
    if inputs.holds(path):
        raise InputError(path, "refusing to overwrite input file", "an output path different from the inputs")


def write_json(path: str | Path, obj: Any) -> Path:
    """Write `obj` as indented JSON atomically; numpy scalars/arrays and paths are converted."""
    path = Path(path)
    text = json.dumps(obj, indent=2, default=_json_default) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray | np.generic):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


# ------------------------------------------------------------------------------------------------ listing


def list_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand files, directories (non-recursive, sorted) and glob patterns (sorted) into image paths.

    Only files with a supported suffix are taken from directories and globs, and never samsem's own
    outputs or temporary files (:func:`is_samsem_output`), so that a folder segmented in place can be
    segmented again; a file named explicitly is taken as it is. Anything but a folder is listed (a FIFO
    or device named like an image too: reading it fails that file, see :func:`regular_fd`). Duplicates
    keep their first position. An input that matches nothing (or cannot be listed) raises InputError.
    """
    files, failures = scan_images(inputs)
    if failures:
        raise failures[0]
    return files


def scan_images(inputs: Sequence[str | Path]) -> tuple[list[Path], list[InputError]]:
    """:func:`list_images` that goes on past bad inputs: (the images found, an InputError per input
    that is missing, matches no image or cannot be listed), for a batch that reports those and segments
    the rest."""
    found: list[Path] = []
    failures: list[InputError] = []
    for item in inputs:
        try:
            found.extend(_expand(item))
        except InputError as exc:
            failures.append(exc)
    seen: set[Path] = set()
    unique = []
    for f in found:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, failures


def _expand(item: str | Path) -> list[Path]:
    """The images one input names (see :func:`list_images`); InputError when there are none."""
    p = Path(item)
    if p.is_dir():
        try:
            files = sorted(f for f in p.iterdir() if not f.is_dir() and _is_input(f))
        except OSError as exc:
            raise InputError(p, f"cannot list the directory ({exc.strerror or exc})") from None
        if not files:
            raise InputError(p, "directory contains no images", ", ".join(IMAGE_SUFFIXES))
        return files
    if p.exists():
        return [_check_input(p, IMAGE_SUFFIXES)]
    if any(c in str(item) for c in "*?["):
        files = sorted(
            Path(f)
            for f in glob.glob(str(item), recursive=True)
            if not os.path.isdir(f) and _is_input(Path(f))
        )
        if not files:
            raise InputError(p, "pattern matches no images", ", ".join(IMAGE_SUFFIXES))
        return files
    raise InputError(p, "file not found")


def _is_input(path: Path) -> bool:
    """An image file that is not one of samsem's outputs (for directory and glob listings)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not is_samsem_output(path)
