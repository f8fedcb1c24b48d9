"""The GPU suite runs end to end on a CPU with tiny models, so that it works the first time a GPU is there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_suite.py"


def _run(out: Path, *extra: str) -> dict:
    cmd = [
        sys.executable,
        str(SUITE),
        "--out",
        str(out),
        "--tiny",
        "--device",
        "cpu",
        "--repeat",
        "2",
        *extra,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "results.md").read_text().startswith("# GPU suite results")
    return json.loads((out / "results.json").read_text())


def test_suite_runs_on_cpu_with_tiny_models(tmp_path: Path) -> None:
    data = _run(
        tmp_path,
        *("--models", "lite", "--pipeline-models", "hiera_t", "--batches", "2,1", "--image", "192"),
        *("--engines", "eager-fp32,eager-bf16,eager-fp16,cudagraphs-bf16", "--budget-s", "300"),
    )
    engines = {(r["engine"], r.get("batch")): r for r in data["engines"]}
    for batch in (2, 1):
        row = engines[("eager-fp32", batch)]
        assert row["ms_per_input"] > 0 and row["iou_vs_fp32"] == 1.0 and row["gflop_per_input"] > 0
        assert 0.9 <= engines[("eager-bf16", batch)]["iou_vs_fp32"] <= 1.0
    assert engines[("eager-fp16", None)]["skipped"] == "needs CUDA"
    assert engines[("cudagraphs-bf16", None)]["skipped"] == "needs CUDA"
    stages = {r["stages"]: r for r in data["pipeline"]}
    assert set(stages) == {"device", "host"}
    for row in stages.values():
        assert row["s_per_image"] > 0 and row["inputs"] == 17 and row["gpu_busy"] > 0
    assert stages["device"]["foreground"] == pytest.approx(stages["host"]["foreground"], abs=1e-3)
    assert data["notes"][-1].startswith("finished in")


def test_suite_skips_what_does_not_fit_the_budget(tmp_path: Path) -> None:
    data = _run(
        tmp_path, "--models", "lite", "--pipeline-models", "", "--engines", "eager-fp32", "--budget-s", "1"
    )
    assert not data["engines"] and not data["pipeline"]
    assert any("budget spent" in n for n in data["notes"])
