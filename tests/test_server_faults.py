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


def test_a_window_wider_than_the_image_costs_what_the_image_does(monkeypatch) -> None:
    """flatten=MAX_FLATTEN on a 256² image uses a disk no wider than the 32² subsample's diagonal, and the
    background equals the one of a window just across the image."""
    sizes: list[int] = []
    real = preprocess.cv2.getStructuringElement
    monkeypatch.setattr(
        preprocess.cv2, "getStructuringElement", lambda shape, k: sizes.append(k[0]) or real(shape, k)
    )
    img = lines_image(256, 256)
    wide = preprocess.estimate_background(img, MAX_FLATTEN)
    across = preprocess.estimate_background(img, 8 * 2 * 46)
    assert wide is not None and across is not None
    assert max(sizes) <= 2 * int(np.ceil(np.hypot(32, 32))) + 1
    np.testing.assert_array_equal(wide.level, across.level)
