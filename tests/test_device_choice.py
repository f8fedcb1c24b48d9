"""--device auto: the GPU when torch sees one, else the CPU, resolved before anything is loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from samsem.cli import main
from samsem.io import write_image
from samsem.runtime.load import resolve_device
from samsem.synth.generate import generate_sample


@pytest.mark.parametrize(("visible", "expected"), [(True, "cuda"), (False, "cpu")])
def test_auto_is_the_gpu_when_there_is_one(monkeypatch, visible: bool, expected: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: visible)
    assert resolve_device("auto") == expected
    assert resolve_device("cuda:1") == "cuda:1" and resolve_device("cpu") == "cpu"


def test_segment_with_device_auto_reports_the_device_used(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    write_image(tmp_path / "a.png", generate_sample("easy", 256, 256, seed=0).image)
    assert main(["segment", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--device", "auto"]) == 0
    report = json.loads((tmp_path / "out" / "a.report.json").read_text())
    assert report["model"]["device"] == "cpu"
