"""Every benchmark script imports and parses its arguments (they run outside the test suite)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = sorted(p for p in (Path(__file__).resolve().parents[1] / "benchmarks").glob("bench_*.py"))


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_benchmark_help(script: Path) -> None:
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage:")


def test_threshold_sweep_applies_each_threshold(tmp_path: Path) -> None:
    tool = Path(__file__).resolve().parents[1] / "tools" / "threshold_sweep.py"
    data = tmp_path / "val"
    synth = [sys.executable, "-m", "samsem.cli", "synth", "--preset", "extreme", "--size", "256"]
    subprocess.run([*synth, "--out", str(data)], check=True, capture_output=True)
    cmd = [sys.executable, str(tool), "--thresholds", "0.02,0.5,0.98", str(data)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = out.stdout.splitlines()
    assert rows[1].startswith("val") and rows[2].startswith("pooled")
    cells = re.findall(r"([\d.]+): ([\d.]+) \(", rows[1])  # (threshold, ESD rate) per cell
    assert [t for t, _ in cells] == ["0.02", "0.5", "0.98"]
    assert len({rate for _, rate in cells}) > 1  # the thresholds change the masks


def test_flatten_experiment_removes_a_charging_ramp_and_keeps_lines() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    try:
        from flatten_experiment import flatten
    finally:
        sys.path.pop(0)
    ramp = np.linspace(0, 80, 512, dtype=np.float32)[None, :].repeat(512, axis=0)  # a bright region
    lines = np.zeros((512, 512), np.float32)
    lines[::32, :] = lines[1::32, :] = lines[2::32, :] = lines[3::32, :] = 100  # 4-px metal lines
    image = (40 + ramp + lines).astype(np.uint8)
    flat = flatten(image, window=128).astype(np.float32)
    background = lines == 0
    inner = np.s_[:, 64:-64]  # away from the border, where the opening sees the whole window
    assert np.ptp(image[inner][background[inner]]) > 50
    assert np.ptp(flat[inner][background[inner]]) < 20  # the ramp is gone
    assert np.median(flat[lines > 0]) - np.median(flat[background]) > 80  # the lines keep their contrast
