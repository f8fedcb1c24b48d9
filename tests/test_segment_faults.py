"""`samsem segment` when writing fails or inputs are bad (issues 26.6, 25.7): one line per failure, no
traceback; an error of the output location stops the run with a summary naming the inputs not tried;
other failures only fail their input; no temporary file is left behind."""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from samsem.cli import main
from samsem.io import write_image

MODEL = ["--model", "classical:otsu"]


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """a, c, d: flat images (masks of a few hundred bytes); b: noise (its mask PNG is over 100 KB)."""
    folder = tmp_path / "images"
    flat = np.zeros((64, 64), np.uint8)
    flat[:, 20:30] = 200
    for name in "acd":
        write_image(folder / f"{name}.png", flat)
    write_image(folder / "b.png", np.random.default_rng(0).integers(0, 256, (1024, 1024), np.uint8))
    return folder


def _temps(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".tmp" in p.name]


def test_file_size_limit_stops_the_run_with_a_summary(images: Path, tmp_path: Path) -> None:
    """Under `ulimit -f` (RLIMIT_FSIZE, EFBIG on write): a is written, b fails, c and d are not tried."""
    out = tmp_path / "out"
    limit = 64 * 1024

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    def segment(out: Path, preexec_fn=None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "samsem.cli", "segment", str(images), "-o", str(out), *MODEL],
            capture_output=True,
            text=True,
            timeout=300,
            preexec_fn=preexec_fn,
        )

    # once without the limit first: caches a first run writes (Numba's) are not what the limit is for
    assert segment(tmp_path / "warm").returncode == 0
    proc = segment(out, small_files)
    err = proc.stderr
    assert proc.returncode == 1, err
    assert "Traceback" not in err and "requested and" not in err
    assert "1 segmented, 0 skipped (all outputs exist), 1 failed, 2 not tried" in err
    assert "FAILED b.png: cannot write its outputs: file size limit exceeded" in err
    assert "NOT TRIED c.png" in err and "NOT TRIED d.png" in err
    assert (out / "a.report.json").exists() and not (out / "b.mask.png").exists()
    assert not _temps(out)


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (errno.ENOSPC, "no space left on the output file system"),
        (errno.EROFS, "the output file system is read-only"),
        (errno.EACCES, "no permission to write in the output directory"),
    ],
)
def test_errors_of_the_output_location_stop_the_run(
    images: Path, tmp_path: Path, capsys, monkeypatch, code: int, reason: str
) -> None:
    out = tmp_path / "out"
    real_replace = os.replace

    def replace(src, dst) -> None:
        if Path(dst).name.startswith("b."):
            raise OSError(code, os.strerror(code), str(src))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    assert main(["segment", str(images), "-o", str(out), *MODEL]) == 1
    err = capsys.readouterr().err
    assert f"FAILED b.png: cannot write its outputs: {reason}" in err
    assert f"STOPPED: {reason}" in err and "NOT TRIED c.png" in err and "NOT TRIED d.png" in err
    assert (out / "a.mask.png").exists() and not (out / "c.mask.png").exists()
    assert not _temps(out)


def test_a_write_error_of_one_file_fails_only_that_file(
    images: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    out = tmp_path / "out"
    real_replace = os.replace

    def replace(src, dst) -> None:
        if Path(dst).name == "b.report.json":
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    assert main(["segment", str(images), "-o", str(out), *MODEL]) == 1
    err = capsys.readouterr().err
    assert "3 segmented, 0 skipped (all outputs exist), 1 failed in" in err
    assert "FAILED b.png: cannot write its outputs: File name too long" in err and "NOT TRIED" not in err
    assert (out / "d.report.json").exists() and not (out / "b.report.json").exists()
    assert not _temps(out)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a folder without write permission")
def test_output_folder_without_write_permission(images: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert main(["segment", str(images), "-o", str(out), *MODEL]) == 1
    finally:
        out.chmod(0o755)
    err = capsys.readouterr().err
    assert "FAILED a.png: cannot write its outputs: no permission to write in the output directory" in err
    assert "NOT TRIED d.png" in err


def test_output_folder_that_cannot_be_created_is_a_usage_error(
    images: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    def mkdir(self, *args, **kwargs) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    out = tmp_path / "ro" / "out"
    monkeypatch.setattr(Path, "mkdir", mkdir)
    assert main(["segment", str(images), "-o", str(out), *MODEL]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1] == f"samsem segment: error: {out}: cannot create the output directory (Read-only file system)"
    )


def test_unreadable_input_folder_is_reported_and_the_rest_segmented(
    images: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    real_iterdir = Path.iterdir

    def iterdir(self):
        if self == locked:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    out = tmp_path / "out"
    assert main(["segment", str(locked), str(images / "a.png"), "-o", str(out), *MODEL]) == 1
    err = capsys.readouterr().err
    assert f"FAILED {locked}: {locked}: cannot list the directory (Permission denied)" in err
    assert "1 segmented" in err and (out / "a.mask.png").exists()


def test_a_mistyped_input_beside_good_ones_fails_alone(images: Path, tmp_path: Path, capsys) -> None:
    """Issue 25.7: reported in one line, the other inputs segmented, exit 1 at the end."""
    typo = tmp_path / "imgaes" / "a.png"
    out = tmp_path / "out"
    assert (
        main(["segment", str(images / "a.png"), str(typo), str(images / "c.png"), "-o", str(out), *MODEL])
        == 1
    )
    err = capsys.readouterr().err
    assert "2 segmented, 0 skipped (all outputs exist), 1 failed" in err
    assert f"FAILED {typo}: {typo}: file not found" in err
    assert (out / "c.mask.png").exists()


def test_no_usable_input_at_all_is_a_usage_error(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "x.png"), str(tmp_path / "*.tif"), "-o", str(out), *MODEL]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no usable input" in err[0] and "x.png: file not found" in err[0]
    assert "pattern matches no images" in err[0] and not out.exists()
