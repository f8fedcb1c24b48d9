"""Wire formats shared by server and client: headers, per-request options, image assembly, mask chunks.

* Per-request options are parsed by :func:`samsem.runtime.config.parse_request_options`.
* Raw images travel as the row-major bytes of an (H, W) uint8 or little-endian uint16 array, split into
  chunks of at most ``chunk_bytes``; the server writes them straight into one preallocated array.
* Encoded images (PNG/TIFF files) are spooled to a temporary file and decoded with
  :func:`samsem.io.read_image`, exactly as ``samsem segment`` reads files.
* Masks travel as consecutive ranges of the flattened (H, W) uint8 {0, 1} mask, each zlib-compressed
  (:func:`mask_chunks`, :class:`MaskAssembler`); a range holds at most ``chunk_bytes`` pixels.

* Encoded uploads are checked as they arrive: the file signature on the first bytes, and for PNG the
  image size from its IHDR header (the first 33 bytes), so a mislabelled or oversized file is refused
  before it is spooled; TIFF sizes are known only once the whole file is there.
* Vector files (:class:`VectorChunk` messages) travel like masks: consecutive pieces of at most
  ``chunk_bytes`` bytes, each zlib-compressed.

Every malformed input raises :class:`~samsem.errors.InputError` with a specific message (the server
turns it into INVALID_ARGUMENT); user input echoed in a message is clipped
(:func:`samsem.server.confine.clip`).
"""

from __future__ import annotations

import os
import struct
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from samsem.errors import ConfigError, InputError
from samsem.server.confine import clip

if TYPE_CHECKING:
    from samsem.vector import VectorOptions

DTYPES: dict[str, np.dtype] = {"uint8": np.dtype("<u1"), "uint16": np.dtype("<u2")}
FORMATS = {"png": ".png", "tiff": ".tif"}
_MAGIC = {"png": (b"\x89PNG\r\n\x1a\n",), "tiff": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")}
ZLIB_LEVEL = 1  # masks are mostly runs; level 1 already compresses them ~20-50x
MAX_NAME_BYTES = 1024  # longest ImageHeader.name (UTF-8 bytes); it is echoed in every reply
MAX_OPTION_CHARS = 256  # longest per-request option key or value
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # IHDR colour type -> channels after decoding
_GRAY_WORK = 12  # bytes per pixel samsem.io's RGB(A) -> gray conversion holds besides the pixels
DECODE_OVERHEAD = 1 << 20  # fixed bytes of a decode besides the arrays (decoder state, small objects)


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
    """Validate an ``ImageHeader`` message (name, options' sizes, layout, dtype, dimensions, sizes) into
    an :class:`ImageSpec`."""
    name = header.name or "image"
    if len(name.encode()) > MAX_NAME_BYTES:
        raise InputError(
            None, f"image name of {len(name.encode())} bytes is longer than {MAX_NAME_BYTES} bytes"
        )
    for key, value in header.options.items():
        if len(key) > MAX_OPTION_CHARS or len(value) > MAX_OPTION_CHARS:
            raise InputError(
                None, f"option {clip(key, 64)!r} is longer than {MAX_OPTION_CHARS} characters (key or value)"
            )
    layout = header.WhichOneof("layout")
    if layout == "raw":
        raw = header.raw
        if raw.dtype not in DTYPES:
            raise InputError(None, f"unsupported dtype {clip(raw.dtype, 32)!r}", " or ".join(DTYPES))
        check_size(raw.height, raw.width, max_pixels)
        dtype = DTYPES[raw.dtype]
        nbytes = raw.height * raw.width * dtype.itemsize
        return ImageSpec(name, "raw", nbytes, dtype, raw.height, raw.width)
    if layout == "encoded":
        enc = header.encoded
        if enc.format not in FORMATS:
            raise InputError(
                None, f"unsupported encoded format {clip(enc.format, 32)!r}", " or ".join(FORMATS)
            )
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


def check_inputs(height: int, width: int, needed: int, max_inputs: int) -> None:
    """Refuse an image whose model inputs (``needed``, from ``Pipeline.count_inputs``) exceed the bound:
    cost follows the number of inputs, which grows with the aspect ratio, not only the pixels."""
    if needed > max_inputs:
        raise InputError(
            None,
            f"image {height}x{width} needs {needed} model inputs, more than the server's limit of "
            f"{max_inputs} (what its largest square image needs)",
            "a less elongated image, or tiles of it",
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
    """Spools an encoded file's chunks to a temporary file (disk, not memory) and decodes it at the end.

    The signature is checked as soon as 8 bytes are in (InputError for data of another format); for PNG,
    :attr:`png_size` is (height, width, bytes to reserve) once the IHDR header is in.
    """

    def __init__(self, spec: ImageSpec, tmp_dir: str | Path | None = None) -> None:
        self.spec = spec
        fd, path = tempfile.mkstemp(prefix="upload-", suffix=FORMATS[spec.format], dir=tmp_dir)
        self.path = Path(path)
        self._file = os.fdopen(fd, "wb")
        self.received = 0
        self._head = b""
        self.png_size: tuple[int, int, int] | None = None

    def add(self, chunk: bytes) -> None:
        """Append one chunk; more bytes than the header's size, or the wrong signature, raise InputError."""
        end = self.received + len(chunk)
        if end > self.spec.nbytes:
            raise InputError(
                None,
                f"header/bytes mismatch: received {end} bytes so far, "
                f"but the header declares {self.spec.nbytes}",
            )
        if len(self._head) < 33:
            self._head += chunk[: 33 - len(self._head)]
            self._check_head()
        self._file.write(chunk)
        self.received = end

    def _check_head(self) -> None:
        fmt, head = self.spec.format, self._head
        if len(head) >= 8 or len(head) == self.spec.nbytes:
            check_signature(head[:8], fmt)
        if fmt == "png" and self.png_size is None and len(head) >= 33:
            self.png_size = png_size(head, self.spec.nbytes)

    def complete(self) -> None:
        """Check the byte count and flush; call before :func:`decode_file`."""
        if self.received < self.spec.nbytes:
            raise InputError(None, f"truncated stream: received {self.received} of {self.spec.nbytes} bytes")
        self._file.close()

    def close(self) -> None:
        """Remove the temporary file."""
        self._file.close()
        self.path.unlink(missing_ok=True)


def check_signature(head: bytes, fmt: str) -> None:
    """InputError unless ``head`` (the first bytes of the upload) starts like a ``fmt`` file."""
    if not head.startswith(_MAGIC[fmt]):
        raise InputError(None, f"the data is not a {fmt} file (it starts with {head[:8]!r})", f"{fmt} bytes")


def png_size(head: bytes, file_bytes: int) -> tuple[int, int, int]:
    """(height, width, bytes to reserve) from a PNG's first 33 bytes (signature + IHDR)."""
    length, ctype = struct.unpack(">I4s", head[8:16])
    if ctype != b"IHDR" or length != 13:
        raise InputError(None, "png data: corrupt PNG file (first chunk is not a valid IHDR header)")
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    if colour not in _PNG_CHANNELS or depth not in (1, 2, 4, 8, 16):
        raise InputError(None, f"png data: corrupt PNG file (bit depth {depth}, colour type {colour})")
    itemsize = 2 if depth == 16 else 1
    return height, width, decode_bytes("png", height, width, itemsize, _PNG_CHANNELS[colour], file_bytes)


def decode_bytes(fmt: str, height: int, width: int, itemsize: int, channels: int, file_bytes: int) -> int:
    """Peak bytes of decoding an upload with :func:`samsem.io.read_image` and segmenting it: the most of

    * decoding: PNG reads the whole file and OpenCV decodes it (file + pixels); RGB(A) pixels are then
      reordered into a copy (2 x pixels); a TIFF is decoded strip by strip into one array (gray: plus
      one copy);
    * the RGB(A) -> gray conversion: the pixels plus a uint32 accumulator and two uint32 temporaries
      (12 bytes per pixel);
    * segmenting: the gray image and its uint8 mask.

    Measured with tracemalloc on 8- and 16-bit gray, RGB and RGBA PNG and TIFF files
    (tests/test_server_hardening.py); 16-bit RGBA needs 20 bytes per pixel.
    """
    px = height * width
    pixels = px * itemsize * channels
    head = file_bytes if fmt == "png" else 0
    if channels == 1:
        decode = head + pixels if fmt == "png" else 2 * pixels
    else:
        decode = max(head + 2 * pixels, pixels + _GRAY_WORK * px)
    return max(decode, px * (itemsize + 1)) + DECODE_OVERHEAD


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
    """(height, width, bytes to reserve, see :func:`decode_bytes`) of an uploaded file from its header
    only. The data must be of the declared format."""
    from samsem.io import image_info

    with open(path, "rb") as fh:
        head = fh.read(8)
    check_signature(head, fmt)
    try:
        info = image_info(path)
    except InputError as exc:
        raise InputError(None, f"{fmt} data: {exc.reason}", exc.expected) from None
    need = decode_bytes(fmt, info.height, info.width, info.dtype.itemsize, info.channels, path.stat().st_size)
    return info.height, info.width, need


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


# ------------------------------------------------------------------------------------------ vectors


def vector_options(request) -> VectorOptions | None:
    """The :class:`samsem.vector.VectorOptions` a ``VectorRequest`` asks for (None: no vectors);
    InputError for unknown formats or bad values, or GDSII on a server without gdstk."""
    import importlib.util

    from samsem.vector import FORMATS as VECTOR_FORMATS
    from samsem.vector import VectorOptions

    formats = tuple(dict.fromkeys(request.formats))
    if not formats:
        return None
    unknown = [clip(f, 32) for f in formats if f not in VECTOR_FORMATS]
    if unknown:
        raise InputError(None, f"unknown vector format(s) {unknown}", ", ".join(VECTOR_FORMATS))
    if "gds" in formats and importlib.util.find_spec("gdstk") is None:
        raise InputError(None, "this server cannot write GDSII (gdstk is not installed)", "svg or geojson")
    try:
        return VectorOptions(
            formats=formats,
            tolerance_px=request.tolerance_px if request.HasField("tolerance_px") else 1.0,
            nm_per_px=request.nm_per_px if request.HasField("nm_per_px") else 1.0,
            gds_layer=request.gds_layer,
            gds_datatype=request.gds_datatype,
        )
    except ConfigError as exc:
        raise InputError(None, f"vector options: {exc}") from None


def vector_request(options: VectorOptions) -> Any:
    """The ``VectorRequest`` message of ``options`` (the client's side of :func:`vector_options`)."""
    from samsem.server import samsem_pb2 as pb

    return pb.VectorRequest(
        formats=list(options.formats),
        tolerance_px=options.tolerance_px,
        nm_per_px=options.nm_per_px,
        gds_layer=options.gds_layer,
        gds_datatype=options.gds_datatype,
    )


def file_pieces(path: Path, piece_bytes: int) -> Iterator[tuple[int, bytes, bool]]:
    """(offset, zlib bytes, last) of consecutive pieces of at most ``piece_bytes`` bytes of a file."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        offset = 0
        while True:
            data = fh.read(piece_bytes)
            last = offset + len(data) >= size
            yield offset, zlib.compress(data, ZLIB_LEVEL), last
            offset += len(data)
            if last or not data:
                return


class VectorAssembler:
    """Rebuilds the vector files of a Segment reply from its VectorChunk messages."""

    def __init__(self) -> None:
        self.files: dict[str, bytearray] = {}
        self.complete: set[str] = set()

    def add(self, chunk) -> None:
        """Add one ``VectorChunk``; pieces out of order or corrupt raise InputError."""
        data = self.files.setdefault(chunk.format, bytearray())
        if chunk.format in self.complete or chunk.offset != len(data):
            raise InputError(
                None, f"vector piece of {clip(chunk.format, 32)} at {chunk.offset} does not continue the file"
            )
        try:
            piece = zlib.decompress(chunk.zlib_data)
        except zlib.error as exc:
            raise InputError(None, f"corrupt vector piece at offset {chunk.offset}: {exc}") from None
        if len(piece) != chunk.length:
            raise InputError(
                None, f"vector piece at {chunk.offset} holds {len(piece)} bytes, not {chunk.length}"
            )
        data += piece
        if chunk.last:
            self.complete.add(chunk.format)

    def result(self) -> dict[str, bytes]:
        """format -> file bytes; InputError when a file is incomplete."""
        missing = sorted(set(self.files) - self.complete)
        if missing:
            raise InputError(None, f"the server's vector files {missing} are incomplete")
        return {fmt: bytes(data) for fmt, data in self.files.items()}
