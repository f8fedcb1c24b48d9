"""Wire formats shared by server and client: headers, per-request options, image assembly, mask chunks.

* Per-request options are parsed by :func:`samsem.runtime.config.parse_request_options`.
* Raw images travel as the row-major bytes of an (H, W) uint8 or little-endian uint16 array, split into
  chunks of at most ``chunk_bytes``; the server writes them straight into one preallocated array.
* Encoded images (PNG/TIFF files) are spooled to a temporary file and decoded with
  :func:`samsem.io.read_image`, exactly as ``samsem segment`` reads files.
* Masks travel as consecutive ranges of the flattened (H, W) uint8 {0, 1} mask, each zlib-compressed
  (:func:`mask_chunks`, :class:`MaskAssembler`); a range holds at most ``chunk_bytes`` pixels.

Every malformed input raises :class:`~samsem.errors.InputError` with a specific message (the server
turns it into INVALID_ARGUMENT).
"""

from __future__ import annotations

import os
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samsem.errors import InputError

DTYPES: dict[str, np.dtype] = {"uint8": np.dtype("<u1"), "uint16": np.dtype("<u2")}
FORMATS = {"png": ".png", "tiff": ".tif"}
_MAGIC = {"png": (b"\x89PNG\r\n\x1a\n",), "tiff": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")}
ZLIB_LEVEL = 1  # masks are mostly runs; level 1 already compresses them ~20-50x


# ------------------------------------------------------------------------------------------ headers


@dataclass(frozen=True)
class ImageSpec:
    """A validated image header. Raw: dtype/height/width set; encoded: format and its byte ``size``."""

    name: str
    kind: str  # "raw" | "encoded"
    nbytes: int  # bytes the client will send
    dtype: np.dtype | None = None
    height: int = 0
    width: int = 0
    format: str = ""


def parse_header(header, max_pixels: int, max_encoded_bytes: int) -> ImageSpec:
    """Validate an ``ImageHeader`` message (layout, dtype, dimensions, sizes) into an :class:`ImageSpec`."""
    name = header.name or "image"
    layout = header.WhichOneof("layout")
    if layout == "raw":
        raw = header.raw
        if raw.dtype not in DTYPES:
            raise InputError(None, f"unsupported dtype {raw.dtype!r}", " or ".join(DTYPES))
        check_size(raw.height, raw.width, max_pixels)
        dtype = DTYPES[raw.dtype]
        nbytes = raw.height * raw.width * dtype.itemsize
        return ImageSpec(name, "raw", nbytes, dtype, raw.height, raw.width)
    if layout == "encoded":
        enc = header.encoded
        if enc.format not in FORMATS:
            raise InputError(None, f"unsupported encoded format {enc.format!r}", " or ".join(FORMATS))
        if enc.size == 0:
            raise InputError(None, "encoded size is 0", "the byte size of the encoded file")
        if enc.size > max_encoded_bytes:
            raise InputError(
                None,
                f"encoded image of {enc.size} bytes exceeds the server's limit of {max_encoded_bytes} bytes",
            )
        return ImageSpec(name, "encoded", enc.size, format=enc.format)
    raise InputError(
        None, "the header has no layout", "a raw layout (dtype, height, width) or an encoded format"
    )


def check_size(height: int, width: int, max_pixels: int) -> None:
    """Refuse zero-sized images and images with more than ``max_pixels`` pixels."""
    if height == 0 or width == 0:
        raise InputError(None, f"zero-sized image ({height}x{width})", "height and width >= 1")
    if height * width > max_pixels:
        raise InputError(
            None,
            f"image {height}x{width} has {height * width} pixels, "
            f"more than the server's limit of {max_pixels}",
        )


# ------------------------------------------------------------------------------------------ images


class RawAssembler:
    """Collects raw chunks into one preallocated (H, W) array: memory is the image, nothing more."""

    def __init__(self, spec: ImageSpec) -> None:
        self.spec = spec
        self.image = np.empty((spec.height, spec.width), spec.dtype)
        self._bytes = self.image.reshape(-1).view(np.uint8)
        self.received = 0

    def add(self, chunk: bytes) -> None:
        """Append one chunk; more bytes than the header declares raise InputError."""
        end = self.received + len(chunk)
        if end > self.spec.nbytes:
            raise InputError(
                None,
                f"header/bytes mismatch: received {end} bytes so far, but the header declares "
                f"{self.spec.height}x{self.spec.width} {self.image.dtype.name} = {self.spec.nbytes} bytes",
            )
        self._bytes[self.received : end] = np.frombuffer(chunk, np.uint8)
        self.received = end

    def finish(self) -> np.ndarray:
        """The complete image (H, W) uint8/uint16 in native byte order; a short stream raises InputError."""
        if self.received < self.spec.nbytes:
            raise InputError(None, f"truncated stream: received {self.received} of {self.spec.nbytes} bytes")
        return (
            self.image if self.image.dtype.isnative else self.image.astype(self.image.dtype.newbyteorder("="))
        )

    def close(self) -> None:
        """Nothing to clean up (symmetry with :class:`EncodedAssembler`)."""


class EncodedAssembler:
    """Spools an encoded file's chunks to a temporary file (disk, not memory) and decodes it at the end."""

    def __init__(self, spec: ImageSpec, tmp_dir: str | Path | None = None) -> None:
        self.spec = spec
        fd, path = tempfile.mkstemp(prefix="samsem-upload-", suffix=FORMATS[spec.format], dir=tmp_dir)
        self.path = Path(path)
        self._file = os.fdopen(fd, "wb")
        self.received = 0

    def add(self, chunk: bytes) -> None:
        """Append one chunk; more bytes than the header's size raise InputError."""
        end = self.received + len(chunk)
        if end > self.spec.nbytes:
            raise InputError(
                None,
                f"header/bytes mismatch: received {end} bytes so far, "
                f"but the header declares {self.spec.nbytes}",
            )
        self._file.write(chunk)
        self.received = end

    def complete(self) -> None:
        """Check the byte count and flush; call before :func:`decode_file`."""
        if self.received < self.spec.nbytes:
            raise InputError(None, f"truncated stream: received {self.received} of {self.spec.nbytes} bytes")
        self._file.close()

    def close(self) -> None:
        """Remove the temporary file."""
        self._file.close()
        self.path.unlink(missing_ok=True)


def decode_file(path: Path, fmt: str, max_pixels: int) -> np.ndarray:
    """Decode an uploaded PNG/TIFF like ``samsem segment``: (H, W) uint8/uint16; errors name the format."""
    from samsem.io import image_info, read_image

    try:
        info = image_info(path)
        check_size(info.height, info.width, max_pixels)
        return read_image(path)
    except InputError as exc:
        if exc.path is None:
            raise
        raise InputError(None, f"{fmt} data: {exc.reason}", exc.expected) from None


def decoded_info(path: Path, fmt: str) -> tuple[int, int, int]:
    """(height, width, buffer bytes) of an uploaded file from its header only: buffer bytes are the
    decoded pixels, the grayscale image and the mask. The data must be of the declared format."""
    from samsem.io import image_info

    with open(path, "rb") as fh:
        head = fh.read(8)
    if not head.startswith(_MAGIC[fmt]):
        raise InputError(None, f"the data is not a {fmt} file (it starts with {head!r})", f"{fmt} bytes")
    try:
        info = image_info(path)
    except InputError as exc:
        raise InputError(None, f"{fmt} data: {exc.reason}", exc.expected) from None
    pixels = info.height * info.width
    return info.height, info.width, pixels * (info.dtype.itemsize * (info.channels + 1) + 1)


# ------------------------------------------------------------------------------------------ masks


def compress_range(mask: np.ndarray, offset: int, length: int) -> bytes:
    """zlib bytes of pixels offset..offset+length of the flattened (H, W) uint8 mask."""
    flat = mask.reshape(-1)
    return zlib.compress(flat[offset : offset + length].data, ZLIB_LEVEL)


class MaskAssembler:
    """Rebuilds a (H, W) uint8 {0, 1} mask from MaskChunk messages (in order, without gaps)."""

    def __init__(self, height: int, width: int) -> None:
        self.mask = np.empty((height, width), np.uint8)
        self._flat = self.mask.reshape(-1)
        self.received = 0

    def add(self, chunk) -> None:
        """Add one ``MaskChunk``; a chunk out of order, of another size, or corrupt raises InputError."""
        h, w = self.mask.shape
        if (chunk.height, chunk.width) != (h, w) or chunk.offset != self.received:
            raise InputError(
                None,
                f"mask chunk for {chunk.height}x{chunk.width} at offset {chunk.offset} does not continue "
                f"the {h}x{w} mask at offset {self.received}",
            )
        if chunk.offset + chunk.length > self._flat.size:
            raise InputError(None, f"mask chunk at {chunk.offset} of length {chunk.length} overruns the mask")
        try:
            data = zlib.decompress(chunk.zlib_data)
        except zlib.error as exc:
            raise InputError(None, f"corrupt mask chunk at offset {chunk.offset}: {exc}") from None
        if len(data) != chunk.length:
            raise InputError(
                None, f"mask chunk at {chunk.offset} holds {len(data)} pixels, not {chunk.length}"
            )
        self._flat[chunk.offset : chunk.offset + chunk.length] = np.frombuffer(data, np.uint8)
        self.received += chunk.length

    @property
    def complete(self) -> bool:
        return self.received == self._flat.size
