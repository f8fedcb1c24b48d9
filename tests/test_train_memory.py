"""Training memory: the estimate, the batch size chosen to fit, the refusal, and the per-epoch line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from samsem.cli import main
from samsem.errors import ConfigError
from samsem.train.config import family_config
from samsem.train.memory import GIB, USABLE_SHARE, plan_batch
from samsem.train.task import MemoryCost, training_memory

CPU = torch.device("cpu")


def test_estimates_grow_with_batch_and_input_area() -> None:
    sam2 = family_config("sam2").with_overrides(loss__betti_weight=0.0)
    cost = training_memory(sam2)
    # the README's SAM2 command (hiera-t, batch 12, 1024 px, CPU) needs far more than a 24 GB machine
    assert cost.total(12) > 30 * GIB and cost.total(1) < 5 * GIB
    half = training_memory(sam2.with_overrides(input_size=512))
    assert half.fixed_bytes == cost.fixed_bytes
    assert half.per_sample_bytes == pytest.approx(cost.per_sample_bytes / 4, rel=0.01)
    large = training_memory(sam2.with_overrides(model_config="sam2.1_hiera_large"))
    assert large.fixed_bytes > cost.fixed_bytes and large.per_sample_bytes > cost.per_sample_bytes
    lite = training_memory(family_config("lite"))
    assert lite.total(8) < cost.total(1)
    betti = training_memory(sam2.with_overrides(loss__betti_weight=0.375))
    assert betti.per_sample_bytes > cost.per_sample_bytes


def test_plan_picks_the_largest_batch_that_fits() -> None:
    cfg = family_config("sam2")
    cost = MemoryCost(fixed_bytes=1 * GIB, per_sample_bytes=2 * GIB, basis="test")
    avail = int(10 * GIB / USABLE_SHARE)  # 10 GiB usable: 1 + 4 x 2 = 9 fits, 5 x 2 does not
    plan = plan_batch(cfg, CPU, None, available=avail, cost=cost)
    assert plan.batch_size == 4 and plan.fits and plan.needed == 9 * GIB
    assert "batch size 4" in plan.message and "the default 12 would need 25.0 GiB" in plan.message
    plenty = plan_batch(cfg, CPU, None, available=100 * GIB, cost=cost)
    assert plenty.batch_size == 12 and "would need" not in plenty.message  # never above the default


def test_plan_refuses_when_one_sample_does_not_fit_and_warns_for_given_sizes() -> None:
    cfg = family_config("sam2")
    cost = MemoryCost(fixed_bytes=1 * GIB, per_sample_bytes=8 * GIB, basis="test")
    with pytest.raises(ConfigError, match=r"needs about 9.0 GiB even at batch size 1.*--input-size"):
        plan_batch(cfg, CPU, None, available=8 * GIB, cost=cost)
    given = plan_batch(cfg, CPU, 3, available=8 * GIB, cost=cost)
    assert given.batch_size == 3 and not given.fits
    assert given.message.startswith("warning: batch size 3") and "may be killed" in given.message


def test_train_command_picks_a_batch_that_fits_and_prints_each_epoch(
    lines_dataset, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --batch-size the CLI picks the largest batch that fits (here 2 of the lite default 8),
    raises accumulation to keep 8 samples per step, and prints a line per epoch that stays."""
    data = lines_dataset(5, 96, seed=1, vertical=True, prefix="a")
    cfg = family_config("lite").with_overrides(model_config="tiny", input_size=64)
    cost = training_memory(cfg)
    monkeypatch.setattr(
        "samsem.train.memory.available_memory",
        lambda device: int((cost.fixed_bytes + 2.5 * cost.per_sample_bytes) / USABLE_SHARE),
    )
    run = tmp_path / "run"
    args = ["train", "--family", "lite", "--config", "tiny", "--input-size", "64", "--patch-size", "64"]
    args += ["--data", str(data), "--out", str(run), "--epochs", "1", "--device", "cpu", "--no-progress"]
    args += ["--esd-border", "4", "--esd-min-area", "4"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "samsem train: batch size 2: the largest up to 8 that fits" in err
    assert "accumulating 4 batches per optimizer step" in err
    saved = json.loads((run / "config.json").read_text())
    assert (saved["batch_size"], saved["accumulation"]) == (2, 4)
    (line,) = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert line.startswith("epoch 1/1: loss ") and "validation ESD rate" in line and " s validation" in line
    # resuming keeps the saved batch size (a warning if it did not fit, never a different size)
    assert main(["train", "--out", str(run), "--epochs", "2", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "batch size 2 (lite tiny at input 64) needs about" in err
    assert [x.split(":")[0] for x in err.splitlines() if x.startswith("epoch ")] == ["epoch 2/2"]


def test_batch_size_overrides_with_a_warning(lines_dataset, tmp_path: Path, capsys, monkeypatch) -> None:
    data = lines_dataset(3, 96, seed=2, vertical=False, prefix="b")
    monkeypatch.setattr("samsem.train.memory.available_memory", lambda device: 1 << 20)
    base = ["train", "--family", "lite", "--config", "tiny", "--input-size", "64", "--patch-size", "64"]
    base += ["--data", str(data), "--epochs", "1", "--device", "cpu", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 2  # nothing fits in 1 MiB: refused
    assert "even at batch size 1" in capsys.readouterr().err
    assert not (tmp_path / "a" / "last.pt").exists()
    assert main([*base, "--out", str(tmp_path / "b"), "--batch-size", "1"]) == 0
    assert "warning: batch size 1" in capsys.readouterr().err
