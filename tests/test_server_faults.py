"""Regression tests of issues 25.1 and 26.2/26.5 (loopback only): OS errors a request's path causes and
out-of-range numbers in a request are answered as bad input, never INTERNAL; option costs are bounded by
the image."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import grpc
import numpy as np
import pytest
from test_server import lines_image, rpc_error, serving

from samsem.io import write_image
from samsem.runtime.config import MAX_FLATTEN, RunOptions, parse_request_options
from samsem.runtime.load import load_pipeline
from samsem.runtime.stages import preprocess
from samsem.server.app import ServerConfig
from samsem.server.service import error_status

_BAD_INPUT = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED)


def _paths(root: Path) -> dict[str, str]:
    """Paths under ``root`` that make the OS refuse them, one per errno."""
    write_image(root / "a.png", lines_image(32, 32))
    (root / "loop").symlink_to(root / "loop")
    return {
        "ENAMETOOLONG": str(root / ("x" * 300) / "a.png"),
        "ENAMETOOLONG-leaf": str(root / ("y" * 256)),
        "ELOOP": str(root / "loop" / "a.png"),
        "ENOTDIR": str(root / "a.png" / "b.png"),
        "ENOENT": str(root / "missing" / "a.png"),
    }


def test_os_errors_of_job_paths_are_bad_input_with_a_reason(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    with serving(ServerConfig(port=0, job_roots=(tmp_path,)), load_pipeline("classical")) as (_, client):
        for why, path in paths.items():
            err = rpc_error(lambda path=path: client.submit_job([path]))
            assert err.code() in _BAD_INPUT, (why, err.code(), err.details())
            assert "internal" not in err.details().lower() and len(err.details()) < 1000, why


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a folder without permissions")
def test_an_unreadable_job_folder_is_permission_denied(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    write_image(locked / "a.png", lines_image(32, 32))
    locked.chmod(0)
    try:
        with serving(ServerConfig(port=0, job_roots=(tmp_path,)), load_pipeline("classical")) as (_, c):
            err = rpc_error(lambda: c.submit_job([str(locked / "a.png")]))
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err.details()
    finally:
        locked.chmod(0o755)


def test_a_folder_the_server_may_not_list_is_permission_denied(tmp_path: Path, monkeypatch) -> None:
    """EACCES where an unprivileged server meets it (a folder it may not list), made without chmod (the
    suite runs as root): PERMISSION_DENIED with the system's reason and no server path."""
    folder = tmp_path / "locked"
    folder.mkdir()
    write_image(folder / "a.png", lines_image(32, 32))
    real = Path.iterdir

    def iterdir(self: Path):
        if self == folder:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    with serving(ServerConfig(port=0, job_roots=(tmp_path,)), load_pipeline("classical")) as (_, client):
        err = rpc_error(lambda: client.submit_job([str(folder)]))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and os.strerror(errno.EACCES) in err.details()
    assert str(tmp_path) not in err.details()


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (errno.ENAMETOOLONG, grpc.StatusCode.INVALID_ARGUMENT),
        (errno.ELOOP, grpc.StatusCode.INVALID_ARGUMENT),
        (errno.ENOTDIR, grpc.StatusCode.INVALID_ARGUMENT),
        (errno.EISDIR, grpc.StatusCode.INVALID_ARGUMENT),
        (errno.ENOENT, grpc.StatusCode.NOT_FOUND),
        (errno.EACCES, grpc.StatusCode.PERMISSION_DENIED),
        (errno.EPERM, grpc.StatusCode.PERMISSION_DENIED),
        (errno.EROFS, grpc.StatusCode.PERMISSION_DENIED),
        (errno.ENOSPC, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errno.EDQUOT, grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
)
def test_os_errors_map_to_a_status_without_the_path(code: int, expected: grpc.StatusCode) -> None:
    spool = "/tmp/samsem-spool-1234/pins-5/7.png"
    status = error_status(OSError(code, os.strerror(code), spool))
    assert status is not None and status.code == expected
    assert os.strerror(code) in status.details and "samsem-spool" not in status.details


# numbers a fuzzer sends: beyond 64 bits, negative, not finite
_NUMBERS = {
    "flatten": ["18446744073709551616", "-1", str(MAX_FLATTEN + 1), "1e9", "9" * 400],
    "seed": ["-1", "18446744073709551616", "9" * 400],
    "min_contrast": ["nan", "inf", "-inf", "1e400", "-0.5"],
}


@pytest.mark.parametrize(("key", "text"), [(k, t) for k, ts in _NUMBERS.items() for t in ts])
def test_out_of_range_numbers_in_options_are_refused_before_compute(key: str, text: str) -> None:
    from samsem.errors import InputError

    with pytest.raises(InputError, match=key):
        parse_request_options(RunOptions(), {key: text})


def test_out_of_range_flatten_is_invalid_argument_over_grpc() -> None:
    with serving(ServerConfig(port=0), load_pipeline("classical")) as (_, client):
        for key, text in (("flatten", "18446744073709551616"), ("seed", "-1")):
            err = rpc_error(
                lambda key=key, text=text: client.segment(lines_image(64, 64), options={key: text})
            )
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and key in err.details()


def _disks(monkeypatch) -> list[int]:
    """The disk widths of the openings estimate_background runs from now on."""
    sizes: list[int] = []
    real = preprocess.cv2.getStructuringElement
    monkeypatch.setattr(
        preprocess.cv2, "getStructuringElement", lambda shape, k: sizes.append(k[0]) or real(shape, k)
    )
    return sizes


def test_a_window_wider_than_the_image_is_the_image(monkeypatch) -> None:
    """flatten=100000 on a 256² image is cut to the window that spans the image (744 px), which needs
    no opening at all, and equals the background of that window."""
    disks = _disks(monkeypatch)
    img = lines_image(256, 256)
    assert (
        preprocess.flatten_window(100_000, 256, 256)
        == preprocess.flatten_window(MAX_FLATTEN, 256, 256)
        == 744
    )
    assert preprocess.flatten_window(256, 256, 256) == 256 and preprocess.flatten_window(0, 256, 256) == 0
    wide = preprocess.estimate_background(img, 100_000)
    span = preprocess.estimate_background(img, 744)
    assert wide is not None and span is not None and disks == []
    np.testing.assert_array_equal(wide.map, span.map)
    assert preprocess.estimate_background(img, 256) is not None and disks == [33]


@pytest.mark.parametrize("window", [600, 5000, 20_000, MAX_FLATTEN - 1])
def test_the_opening_of_any_window_is_at_most_max_disk_wide(monkeypatch, window: int) -> None:
    """Wide windows on a large image open a coarser subsample: the disk (and the cost, pixels x disk²)
    stays bounded by the image; before, 20000 px on a 4096² image took about a minute."""
    disks = _disks(monkeypatch)
    preprocess.estimate_background(np.zeros((2048, 4096), np.uint8), window)
    assert all(k <= preprocess.MAX_DISK for k in disks)


def test_the_report_says_the_window_used_and_the_mask_is_the_images() -> None:
    """Over gRPC: flatten=100000 is answered like flatten=744 on a 256² image (the effective window,
    reported as flatten_px), not refused and not run with a 100000-px disk."""
    img = lines_image(256, 256)
    with serving(ServerConfig(port=0), load_pipeline("classical")) as (_, client):
        wide = client.segment(img, options={"flatten": "100000"})
        span = client.segment(img, options={"flatten": "744"})
        narrow = client.segment(img, options={"flatten": "128"})
    assert (
        wide.report["flatten_px"] == span.report["flatten_px"] == 744 and narrow.report["flatten_px"] == 128
    )
    assert wide.report["config"]["flatten"] == 100_000
    np.testing.assert_array_equal(wide.mask, span.mask)


@pytest.mark.parametrize("nm_per_px", [1e300, 1e30, 1e15])
def test_a_pixel_size_gdsii_cannot_hold_is_invalid_argument(nm_per_px: float, tmp_path: Path) -> None:
    """GDSII coordinates are 32-bit integers: a pixel size that overflows them is bad input, refused
    before any work (it was INTERNAL at 1e30 and above, and wrapped around silently at 1e15)."""
    pytest.importorskip("gdstk")
    from samsem.errors import InputError
    from samsem.vector import VectorOptions

    write_image(tmp_path / "a.png", lines_image(64, 64))

    with serving(ServerConfig(port=0), load_pipeline("classical")) as (srv, client):
        vector = VectorOptions(formats=("gds",), nm_per_px=nm_per_px)
        for image in (lines_image(64, 64), tmp_path / "a.png"):  # raw, and PNG (its header)
            err = rpc_error(lambda image=image: client.segment(image, vector=vector))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "GDSII cannot hold" in err.details()
        assert srv.server.metrics.compute_seconds._sum.get() == 0  # nothing was segmented
        with pytest.raises(InputError, match="GDSII cannot hold"):
            vector.check_size(64, 64)
        fine = client.segment(lines_image(64, 64), vector=VectorOptions(formats=("gds",), nm_per_px=1e6))
        assert fine.vectors["gds"]
