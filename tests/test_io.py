"""Tests of samsem.io: format round trips, region reads, memory bound, bad input, atomic writes, listing."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from samsem import io
from samsem.errors import InputError
from samsem.io import (
    atomic_path,
    image_info,
    list_images,
    read_image,
    read_mask,
    read_region,
    write_image,
    write_json,
    write_mask,
)

RNG = np.random.default_rng(0)


def _random(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    return RNG.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True, dtype=dtype)


def _png_bytes(width: int, height: int, depth: int = 8, colour: int = 0) -> bytes:
    """A minimal PNG whose header claims the given size (pixel data: one empty row)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00"))
        + chunk(b"IEND", b"")
    )


# ------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("suffix", [".png", ".tif", ".tiff", ".PNG"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_write_read_image_round_trip(tmp_path: Path, suffix: str, dtype: type) -> None:
    img = _random((37, 53), dtype)
    path = write_image(tmp_path / f"img{suffix}", img)
    info = image_info(path)
    assert (info.height, info.width, info.dtype, info.channels) == (37, 53, np.dtype(dtype), 1)
    out = read_image(path)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, img)


def test_bigtiff_and_tiled_tiff_read(tmp_path: Path) -> None:
    img = _random((300, 410), np.uint16)
    tifffile.imwrite(tmp_path / "big.tif", img, bigtiff=True)
    tifffile.imwrite(tmp_path / "tiled.tif", img, tile=(64, 48), compression="zlib")
    with tifffile.TiffFile(tmp_path / "big.tif") as tif:
        assert tif.is_bigtiff
    with tifffile.TiffFile(tmp_path / "tiled.tif") as tif:
        assert tif.pages.first.is_tiled
    for name in ("big.tif", "tiled.tif"):
        np.testing.assert_array_equal(read_image(tmp_path / name), img)


def test_write_image_uses_tiles_and_bigtiff_above_thresholds(tmp_path: Path, monkeypatch) -> None:
    img = _random((70, 90), np.uint16)
    small = write_image(tmp_path / "small.tif", img)
    monkeypatch.setattr(io, "TILED_MIN_PIXELS", 1000)
    monkeypatch.setattr(io, "BIGTIFF_MIN_BYTES", 1000)
    large = write_image(tmp_path / "large.tif", img)
    with tifffile.TiffFile(small) as tif:
        assert not tif.is_bigtiff and not tif.pages.first.is_tiled
    with tifffile.TiffFile(large) as tif:
        page = tif.pages.first
        assert tif.is_bigtiff and page.is_tiled and (page.tilelength, page.tilewidth) == io.TIFF_TILE
    np.testing.assert_array_equal(read_image(large), img)


def test_rgb_png_converted_with_bt601_luma(tmp_path: Path) -> None:
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = (200, 100, 50)  # 59.8 + 58.7 + 5.7 = 124.2 -> 124
    rgb[0, 1] = (0, 0, 250)  # 28.5 -> rounded half up to 29
    rgb[0, 2] = (255, 255, 255)
    cv2.imwrite(str(tmp_path / "rgb.png"), rgb[:, :, ::-1])  # OpenCV writes BGR
    assert image_info(tmp_path / "rgb.png").channels == 3
    gray = read_image(tmp_path / "rgb.png")
    assert gray.dtype == np.uint8
    np.testing.assert_array_equal(gray, [[124, 29, 255], [0, 0, 0]])


def test_rgba_tiff_16bit_luma_drops_alpha(tmp_path: Path) -> None:
    rgba = np.zeros((1, 2, 4), np.uint16)
    rgba[0, 0] = (1000, 2000, 3000, 0)  # 299 + 1174 + 342 = 1815
    rgba[0, 1] = (65535, 65535, 65535, 7)
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb")
    assert image_info(tmp_path / "rgba.tif").channels == 4
    gray = read_image(tmp_path / "rgba.tif")
    assert gray.dtype == np.uint16
    np.testing.assert_array_equal(gray, [[1815, 65535]])


def test_planar_rgb_tiff_and_regions(tmp_path: Path) -> None:
    planes = _random((3, 40, 50), np.uint8)
    tifffile.imwrite(
        tmp_path / "planar.tif", planes, photometric="rgb", planarconfig="separate", rowsperstrip=8
    )
    r, g, b = (planes[i].astype(np.int64) for i in range(3))
    expected = ((299 * r + 587 * g + 114 * b + 500) // 1000).astype(np.uint8)
    np.testing.assert_array_equal(read_image(tmp_path / "planar.tif"), expected)
    np.testing.assert_array_equal(read_region(tmp_path / "planar.tif", 5, 7, 20, 30), expected[5:25, 7:37])


def test_bilevel_tiff_reads_as_0_255_and_mask(tmp_path: Path) -> None:
    bits = RNG.random((20, 30)) > 0.5
    tifffile.imwrite(tmp_path / "bits.tif", bits)
    np.testing.assert_array_equal(read_image(tmp_path / "bits.tif"), bits * 255)
    np.testing.assert_array_equal(read_mask(tmp_path / "bits.tif"), bits)


# -------------------------------------------------------------------------------------------- regions

# (y, x, h, w) on a 300x410 image: a pixel, the whole image, boxes straddling tile/strip borders, one row
BOXES = [
    (0, 0, 1, 1),
    (0, 0, 300, 410),
    (63, 47, 2, 2),
    (60, 40, 100, 100),
    (250, 380, 50, 30),
    (17, 5, 1, 400),
]


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("tiled", {"tile": (64, 48), "compression": "zlib"}),
        ("tiled_raw", {"tile": (64, 64)}),
        ("strips", {"rowsperstrip": 7, "compression": "zlib", "predictor": True}),
        ("contiguous", {}),  # memory-mapped path
        ("bigendian", {"byteorder": ">"}),
        ("bigtiff_tiled", {"bigtiff": True, "tile": (32, 32), "compression": "zlib"}),
    ],
)
def test_tiff_region_equals_slice(tmp_path: Path, name: str, kwargs: dict) -> None:
    img = _random((300, 410), np.uint16)
    path = tmp_path / f"{name}.tif"
    tifffile.imwrite(path, img, **kwargs)
    for y, x, h, w in BOXES:
        region = read_region(path, y, x, h, w)
        assert region.dtype == np.uint16
        np.testing.assert_array_equal(region, img[y : y + h, x : x + w], err_msg=f"{name} box {(y, x, h, w)}")


def test_png_region_equals_slice(tmp_path: Path) -> None:
    img = _random((300, 410), np.uint8)
    path = write_image(tmp_path / "img.png", img)
    for y, x, h, w in BOXES:
        np.testing.assert_array_equal(read_region(path, y, x, h, w), img[y : y + h, x : x + w])


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize(
    "box,reason",
    [
        ((0, 0, 0, 5), "empty region y=0 x=0 h=0 w=5"),
        ((3, 3, 5, -1), "empty region y=3 x=3 h=5 w=-1"),
        ((-1, 0, 5, 5), "region y=-1 x=0 h=5 w=5 lies outside"),
        ((0, 20, 5, 11), "region y=0 x=20 h=5 w=11 lies outside"),
        ((16, 0, 5, 5), "region y=16 x=0 h=5 w=5 lies outside"),
    ],
)
def test_region_outside_or_empty_raises(tmp_path: Path, suffix: str, box: tuple, reason: str) -> None:
    path = write_image(tmp_path / f"small{suffix}", np.zeros((20, 30), np.uint8))
    with pytest.raises(InputError, match="image size 20x30") as err:
        read_region(path, *box)
    assert reason in str(err.value) and f"small{suffix}" in str(err.value)


# ------------------------------------------------------------------------------ large TIFF, bounded memory

BIG = 20000
TILE = 512


def _big_value(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Pixel value of the synthetic large TIFF: a per-tile constant, first tile row = column index."""
    across = -(-BIG // TILE)
    const = ((y // TILE) * across + x // TILE) * 37 % 65536
    return np.where(y % TILE == 0, x % 65536, const).astype(np.uint16)


@pytest.fixture(scope="module")
def big_tiff(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20000x20000 uint16 tiled zlib TIFF (800 MB of pixels, ~5 MB on disk), written tile by tile."""
    n = -(-BIG // TILE)
    cols = np.arange(TILE)

    def tiles():
        for ty in range(n):
            for tx in range(n):
                yield _big_value(ty * TILE + cols[:, None], tx * TILE + cols[None, :])

    path = tmp_path_factory.mktemp("big") / "big.tif"
    tifffile.imwrite(
        path,
        tiles(),
        shape=(BIG, BIG),
        dtype=np.uint16,
        tile=(TILE, TILE),
        compression="zlib",
        compressionargs={"level": 1},
        metadata=None,
    )
    return path


def test_large_tiff_region_memory_bounded(big_tiff: Path) -> None:
    assert os.path.getsize(big_tiff) < 50e6
    info = image_info(big_tiff)
    assert (info.height, info.width, info.dtype) == (BIG, BIG, np.uint16)
    script = f"""
import json, resource, tracemalloc
import numpy as np
from samsem.io import read_region
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
region = read_region({str(big_tiff)!r}, 9990, 10100, 512, 512)
peak = tracemalloc.get_traced_memory()[1]
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
np.save({str(big_tiff.with_suffix(".npy"))!r}, region)
print(json.dumps({{"peak": peak, "rss_kb": rss}}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    assert stats["peak"] < 100e6, stats  # numpy + Python allocations during the read
    assert stats["rss_kb"] * 1024 < 100e6, stats  # process peak RSS growth (Linux: KiB)
    yy, xx = np.mgrid[9990 : 9990 + 512, 10100 : 10100 + 512]
    np.testing.assert_array_equal(np.load(big_tiff.with_suffix(".npy")), _big_value(yy, xx))


def test_large_tiff_regions_straddling_tiles(big_tiff: Path) -> None:
    for y, x, h, w in [(0, 0, 3, 3), (511, 511, 2, 2), (BIG - 100, BIG - 77, 100, 77), (1020, 19990, 10, 10)]:
        yy, xx = np.mgrid[y : y + h, x : x + w]
        np.testing.assert_array_equal(read_region(big_tiff, y, x, h, w), _big_value(yy, xx))


# ---------------------------------------------------------------------------------------------- masks


def test_read_mask_png_tiff_rgb(tmp_path: Path) -> None:
    mask = RNG.random((20, 30)) > 0.6
    write_mask(tmp_path / "m.png", mask)
    write_mask(tmp_path / "m.tif", mask.astype(np.uint8))
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "m.png"), cv2.IMREAD_UNCHANGED), mask * 255)
    with tifffile.TiffFile(tmp_path / "m.tif") as tif:
        assert tif.pages.first.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        np.testing.assert_array_equal(tif.asarray(), mask * 255)
    for name in ("m.png", "m.tif"):
        out = read_mask(tmp_path / name, shape=(20, 30))
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, mask)
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 3] = 255  # opaque alpha alone is not metal
    rgba[0, 1, 2] = 1  # only blue set -> metal
    rgba[1, 2, 0] = 9  # only red set -> metal
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb")
    np.testing.assert_array_equal(read_mask(tmp_path / "rgba.tif"), [[0, 1, 0], [0, 0, 1]])


def test_read_mask_svg_and_size_mismatch(tmp_path: Path) -> None:
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="8" height="6"><path d="M1,1 L3,1 L3,2 L1,2 Z"/></svg>'
    )
    (tmp_path / "m.svg").write_text(svg)
    expected = np.zeros((6, 8), np.uint8)
    expected[1:3, 1:4] = 1
    np.testing.assert_array_equal(read_mask(tmp_path / "m.svg", shape=(6, 8)), expected)
    with pytest.raises(InputError, match="mask size 6x8 does not match image size 6x9") as err:
        read_mask(tmp_path / "m.svg", shape=(6, 9))
    assert "m.svg" in str(err.value)
    write_mask(tmp_path / "m.png", expected)
    with pytest.raises(InputError, match="mask size 6x8 does not match image size 7x8"):
        read_mask(tmp_path / "m.png", shape=(7, 8))


def test_write_mask_large_is_tiled(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(io, "TILED_MIN_PIXELS", 100)
    mask = np.zeros((40, 50), bool)
    mask[10:30, 5:45] = True
    path = write_mask(tmp_path / "sub" / "dir" / "m.tif", mask)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages.first.is_tiled
    np.testing.assert_array_equal(read_mask(path), mask)


def test_write_rejects_bad_arrays(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8 or uint16"):
        write_image(tmp_path / "a.png", np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="bool or integer"):
        write_mask(tmp_path / "a.png", np.zeros((4, 4), np.float64))
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------ bad inputs


def _assert_input_error(path: Path, *fragments: str, func=read_image) -> InputError:
    with pytest.raises(InputError) as err:
        func(path)
    message = str(err.value)
    assert path.name in message, message
    for fragment in fragments:
        assert fragment in message, message
    return err.value


def test_missing_directory_and_unknown_suffix(tmp_path: Path) -> None:
    _assert_input_error(tmp_path / "nope.png", "file not found")
    _assert_input_error(tmp_path, "is a directory")
    (tmp_path / "photo.gif").write_bytes(b"GIF89a")
    err = _assert_input_error(tmp_path / "photo.gif", "unsupported file type '.gif'", func=image_info)
    assert ".tif" in err.expected and ".jpg" in err.expected
    (tmp_path / "cut.jpg").write_bytes(b"\xff\xd8\xff")
    _assert_input_error(tmp_path / "cut.jpg", "corrupt or truncated JPEG", func=image_info)
    (tmp_path / "cut.bmp").write_bytes(b"BM\x00")
    _assert_input_error(tmp_path / "cut.bmp", "truncated BMP")


def test_not_an_image_and_empty(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("hello, this is text")
    _assert_input_error(tmp_path / "notes.png", "not a PNG, TIFF, JPEG or BMP image")
    (tmp_path / "empty.tif").write_bytes(b"")
    _assert_input_error(tmp_path / "empty.tif", "empty file (0 bytes)", func=image_info)


def test_truncated_png(tmp_path: Path) -> None:
    good = write_image(tmp_path / "good.png", _random((200, 200), np.uint16)).read_bytes()
    (tmp_path / "half.png").write_bytes(good[: len(good) // 2])
    assert image_info(tmp_path / "half.png").height == 200  # the header is intact
    _assert_input_error(tmp_path / "half.png", "corrupt or truncated PNG")
    (tmp_path / "head.png").write_bytes(good[:20])
    _assert_input_error(tmp_path / "head.png", "truncated PNG file (20 bytes", func=image_info)


def test_truncated_and_corrupt_tiff(tmp_path: Path) -> None:
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, _random((300, 400), np.uint16), tile=(64, 64), compression="zlib")
    data = good.read_bytes()
    (tmp_path / "half.tif").write_bytes(data[: len(data) // 2])
    _assert_input_error(tmp_path / "half.tif", "truncated TIFF file", func=image_info)
    (tmp_path / "stub.tif").write_bytes(data[:12])
    _assert_input_error(tmp_path / "stub.tif", "corrupt or truncated TIFF file")
    with tifffile.TiffFile(good) as tif:
        offset = tif.pages.first.dataoffsets[3]
    broken = bytearray(data)
    broken[offset + 5 : offset + 200] = bytes(195)
    (tmp_path / "broken.tif").write_bytes(bytes(broken))
    _assert_input_error(tmp_path / "broken.tif", "corrupt or truncated TIFF file", "zlib")
    # tile 3 covers rows 0..63, columns 192..255: other regions still read
    assert read_region(tmp_path / "broken.tif", 100, 0, 10, 10).shape == (10, 10)
    with pytest.raises(InputError, match="corrupt"):
        read_region(tmp_path / "broken.tif", 0, 200, 10, 10)


def test_zero_sized_images(tmp_path: Path) -> None:
    (tmp_path / "zero.png").write_bytes(_png_bytes(0, 5))
    _assert_input_error(tmp_path / "zero.png", "zero-sized image (5x0)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tifffile: "writing zero-size array"
        tifffile.imwrite(tmp_path / "zero.tif", np.zeros((0, 5), np.uint8))
    _assert_input_error(tmp_path / "zero.tif", "zero-sized image", func=image_info)


def test_png_header_too_large_for_opencv(tmp_path: Path) -> None:
    (tmp_path / "huge.png").write_bytes(_png_bytes(40000, 40000))
    _assert_input_error(tmp_path / "huge.png", "PNG too large to decode", func=image_info)


@pytest.mark.parametrize(
    "dtype,kind",
    [(np.float32, "32-bit float"), (np.int32, "32-bit signed integer"), (np.int16, "16-bit signed")],
)
def test_unsupported_dtype(tmp_path: Path, dtype: type, kind: str) -> None:
    tifffile.imwrite(tmp_path / "bad.tif", np.zeros((4, 5), dtype))
    err = _assert_input_error(tmp_path / "bad.tif", f"unsupported pixel type {kind}")
    assert "expected 8- or 16-bit unsigned integer" in str(err)


@pytest.mark.parametrize("channels", [2, 5])
def test_unsupported_channel_count(tmp_path: Path, channels: int) -> None:
    tifffile.imwrite(
        tmp_path / "bad.tif",
        np.zeros((4, 5, channels), np.uint8),
        photometric="minisblack",
        planarconfig="contig",
    )
    _assert_input_error(tmp_path / "bad.tif", f"unsupported number of channels ({channels})", func=read_mask)


def test_gray_alpha_png_unsupported(tmp_path: Path) -> None:
    (tmp_path / "ga.png").write_bytes(_png_bytes(3, 3, depth=8, colour=4))
    _assert_input_error(tmp_path / "ga.png", "unsupported number of channels (2)", func=image_info)


# -------------------------------------------------------------------------------------- atomic writes


def test_atomic_path_failure_keeps_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"original")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".png" and tmp != target
        tmp.write_bytes(b"partial")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"original"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_failing_writer_leaves_no_temp_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "out.tif"
    write_image(target, np.full((4, 4), 7, np.uint8))

    def broken_imwrite(path, *args, **kwargs):
        Path(path).write_bytes(b"II*\x00partial")
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", broken_imwrite)
    with pytest.raises(OSError, match="disk full"):
        write_image(target, np.zeros((4, 4), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif"]
    np.testing.assert_array_equal(read_image(target), np.full((4, 4), 7, np.uint8))


def test_atomic_write_replaces_and_creates_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "img.png"
    write_image(target, np.zeros((3, 3), np.uint8))
    write_image(target, np.full((3, 3), 9, np.uint8))
    np.testing.assert_array_equal(read_image(target), np.full((3, 3), 9, np.uint8))
    assert [p.name for p in target.parent.iterdir()] == ["img.png"]


def test_protect_refuses_inputs(tmp_path: Path, monkeypatch) -> None:
    src = write_image(tmp_path / "in.png", np.full((3, 3), 5, np.uint8))
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.png").symlink_to(src)
    os.link(src, tmp_path / "hard.png")
    monkeypatch.chdir(tmp_path / "sub")
    for target in (src, Path("..") / "in.png", tmp_path / "link.png", tmp_path / "hard.png"):
        for protect in ([src], io.Inputs([src])):  # a list, or indexed once for many writes
            with pytest.raises(InputError, match="refusing to overwrite input file"):
                write_mask(target, np.ones((3, 3), bool), protect=protect)
    with pytest.raises(InputError, match="refusing to overwrite input file"):
        write_image(src, np.zeros((3, 3), np.uint8), protect=[Path("../sub/../in.png")])
    np.testing.assert_array_equal(read_image(src), np.full((3, 3), 5, np.uint8))
    write_image(tmp_path / "out.png", np.zeros((3, 3), np.uint8), protect=[src])  # other paths are fine
    write_image(tmp_path / "out.png", np.zeros((3, 3), np.uint8), protect=io.Inputs([src]))


def test_write_unknown_suffix_refused(tmp_path: Path) -> None:
    for func, arr in ((write_image, np.zeros((2, 2), np.uint8)), (write_mask, np.zeros((2, 2), bool))):
        with pytest.raises(InputError, match=r"unsupported output file type '\.jpg'"):
            func(tmp_path / "x.jpg", arr)
    assert not list(tmp_path.iterdir())


def test_write_json_converts_numpy(tmp_path: Path) -> None:
    obj = {
        "n": np.int64(3),
        "f": np.float32(0.5),
        "b": np.bool_(True),
        "a": np.arange(3, dtype=np.uint16),
        "m": np.eye(2),
        "p": Path("x/y.png"),
    }
    path = write_json(tmp_path / "deep" / "r.json", obj)
    text = path.read_text()
    assert text.startswith('{\n  "n": 3,') and text.endswith("}\n")
    assert json.loads(text) == {
        "n": 3,
        "f": 0.5,
        "b": True,
        "a": [0, 1, 2],
        "m": [[1, 0], [0, 1]],
        "p": "x/y.png",
    }
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        write_json(tmp_path / "bad.json", {"s": {1}})
    assert not (tmp_path / "bad.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep"]


# ------------------------------------------------------------------------------------------- listing


def test_list_images(tmp_path: Path, monkeypatch) -> None:
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    for name in ("b.tif", "a.png", "c.TIFF", "notes.txt", "sub/e.png"):
        (d / name).write_bytes(b"x")
    (tmp_path / "z.png").write_bytes(b"x")
    assert list_images([d]) == [d / "a.png", d / "b.tif", d / "c.TIFF"]
    assert list_images([str(d / "*.t*")]) == [d / "b.tif"]
    assert list_images([str(d / "**" / "*.png")]) == [d / "a.png", d / "sub" / "e.png"]
    # the repeated a.png keeps its first place
    assert list_images([tmp_path / "z.png", d, d / "a.png"]) == [
        tmp_path / "z.png",
        d / "a.png",
        d / "b.tif",
        d / "c.TIFF",
    ]
    monkeypatch.chdir(tmp_path)
    assert list_images(["z.png"]) == [Path("z.png")]
    with pytest.raises(InputError, match="file not found") as err:
        list_images([d, "missing.png"])
    assert "missing.png" in str(err.value)
    with pytest.raises(InputError, match="pattern matches no images"):
        list_images([str(d / "*.jpg")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="directory contains no images"):
        list_images([tmp_path / "empty"])
    with pytest.raises(InputError, match=r"unsupported file type '\.txt'"):
        list_images([d / "notes.txt"])


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg", ".bmp"])
def test_jpeg_and_bmp_inputs_are_read_as_gray_like_png(tmp_path: Path, suffix: str) -> None:
    """JPEG and BMP inputs: header facts without decoding, gray by the same luma as PNG, listed from
    folders; colour BMP (lossless) gives exactly the PNG's gray values."""
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / f"colour{suffix}"), rgb)
    cv2.imwrite(str(tmp_path / f"gray{suffix}"), gray)
    cv2.imwrite(str(tmp_path / "colour.png"), rgb)
    info = image_info(tmp_path / f"colour{suffix}")
    assert (info.height, info.width, info.dtype) == (37, 53, np.uint8)
    img = read_image(tmp_path / f"colour{suffix}")
    assert img.shape == (37, 53) and img.dtype == np.uint8
    png = read_image(tmp_path / "colour.png")
    if suffix == ".bmp":
        np.testing.assert_array_equal(img, png)
        np.testing.assert_array_equal(read_image(tmp_path / "gray.bmp"), gray)
    else:  # lossy: close to the PNG's gray values
        assert np.abs(img.astype(int) - png).mean() < 40
        assert np.abs(read_image(tmp_path / f"gray{suffix}").astype(int) - gray).mean() < 20
    np.testing.assert_array_equal(read_region(tmp_path / f"colour{suffix}", 3, 4, 5, 6), img[3:8, 4:10])
    assert tmp_path / f"colour{suffix}" in list_images([tmp_path])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
@pytest.mark.parametrize("reader", ["read_image", "image_info"])
def test_fifo_input_is_refused_without_blocking(tmp_path, reader):
    """A FIFO swapped in for an input (issue 26.4) fails with a clear reason instead of hanging the reader."""
    import threading

    fifo = tmp_path / "a.png"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def read():
        try:
            getattr(io, reader)(fifo)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(30)
    if worker.is_alive():  # unblock the stuck reader before failing
        with open(fifo, "wb", opener=lambda p, f: os.open(p, f | os.O_NONBLOCK)):
            pass
        pytest.fail(f"{reader} blocked on a FIFO")
    assert isinstance(outcome[0], InputError)
    assert "FIFO, not a regular file" in str(outcome[0])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_cli_reports_fifos_beside_good_images_and_finishes(tmp_path):
    """A FIFO named like an image, in a folder or named on the command line, is one FAILED line and the
    run goes on (exit 1); it is never opened for a blocking read."""
    folder, out = tmp_path / "in", tmp_path / "out"
    write_image(folder / "good.png", np.tile(np.uint8([20, 200]), (32, 16)))
    os.mkfifo(folder / "pipe.png")
    for args in ([str(folder)], [str(folder / "good.png"), str(folder / "pipe.png")]):
        res = subprocess.run(
            [sys.executable, "-m", "samsem.cli", "segment", *args, "-o", str(out), "--model", "classical"],
            capture_output=True,
            text=True,
            timeout=300,  # an upper bound: a blocked read would hang here
        )
        assert res.returncode == 1, res.stderr
        assert "pipe.png: is a FIFO, not a regular file" in res.stderr and "Traceback" not in res.stderr
        assert (out / "good.mask.png").is_file()


def test_a_short_png_write_is_an_os_error_with_its_errno(tmp_path):
    """Under a file-size limit the PNG write fails with EFBIG (not numpy's errno-less short write) and
    leaves no partial file, so callers can tell a full disk from a bad file."""
    script = (
        "import errno, resource, signal, sys, numpy as np\n"
        "from samsem.io import write_mask\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "mask = np.random.default_rng(0).integers(0, 2, (256, 256))\n"
        "try:\n"
        "    write_mask(sys.argv[1], mask)\n"
        "except OSError as exc:\n"
        "    print(errno.errorcode.get(exc.errno, exc.errno))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "m.png")], capture_output=True, text=True, timeout=120
    )
    assert res.stdout.strip() == "EFBIG", res.stderr
    assert list(tmp_path.iterdir()) == []
