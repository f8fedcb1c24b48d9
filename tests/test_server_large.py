"""A 16k x 16k image streams through a `samsem serve` process whose memory stays bounded."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_server import lines_image

from samsem.server.client import SamsemClient

PROC = Path("/proc")
SIDE = 16384
MARGIN = 128 << 20  # runtime per-batch buffers, gRPC buffers, allocator slack


def _status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (peak) of a process in bytes."""
    out = {}
    for line in (PROC / str(pid) / "status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def start_server(
    tmp_path: Path, *args: str, command: list[str] | None = None
) -> tuple[subprocess.Popen, str]:
    """A server process on a free loopback port; returns (process, address).

    Default: `samsem serve --port 0 --ready-file READY ARGS`; ``command``
    replaces `samsem serve ...` and gets the ready-file path as its last argument.
    """
    ready = tmp_path / "ready"
    cmd = [sys.executable, "-m", "samsem.cli", "serve", "--port", "0", "--ready-file", str(ready), *args]
    if command is not None:
        cmd = [*command, str(ready)]
    with open(tmp_path / "server.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    t0 = time.monotonic()
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() - t0 > 60:
            proc.kill()
            raise AssertionError(f"server did not start:\n{(tmp_path / 'server.log').read_text()}")
        time.sleep(0.05)
    return proc, ready.read_text().strip()


@pytest.mark.skipif(not (PROC / "self" / "status").exists(), reason="needs /proc to read process memory")
def test_16k_image_streams_with_bounded_server_memory(tmp_path: Path) -> None:
    proc, address = start_server(tmp_path, "--model", "classical")  # image + mask are what is measured
    try:
        tile = lines_image(509, 512, seed=7)  # odd period so patches differ
        image = np.tile(tile, (SIDE // 509 + 1, SIDE // 512))[:SIDE, :SIDE]
        assert image.shape == (SIDE, SIDE)
        with SamsemClient(address) as client:
            client.segment(lines_image(600, 600))  # warm up: imports, JIT, allocator
            base = _status(proc.pid)["VmRSS"]
            (PROC / str(proc.pid) / "clear_refs").write_text("5")  # reset the peak (VmHWM) to now
            seen: list[int] = []
            t0 = time.monotonic()
            out = client.segment(image, name="big", progress=lambda d, t: seen.append(d), timeout=300)
            elapsed = time.monotonic() - t0
        peak = _status(proc.pid)["VmHWM"]
        growth = peak - base
        budget = image.nbytes + SIDE * SIDE + MARGIN  # the image, its mask, a fixed margin
        print(f"16k: {elapsed:.1f} s, server RSS {base >> 20} -> peak {peak >> 20} MiB (+{growth >> 20} MiB)")
        assert growth < budget, f"server grew by {growth >> 20} MiB, budget {budget >> 20} MiB"
        assert out.mask.shape == (SIDE, SIDE) and out.mask.dtype == np.uint8
        assert out.report["n_patches"] == len(out.report["patches"]) > 1000
        assert seen[-1] == out.report["n_patches"] and len(seen) > 100  # progress per batch
        assert out.report["foreground_fraction"] == pytest.approx(float(out.mask.mean()), abs=1e-9)
        assert 0.05 < out.mask.mean() < 0.95
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0
