"""`samsem train --family lite`: the lite adapter learns, and its checkpoint runs in the runtime."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from samsem.cli import main
from samsem.errors import ConfigError
from samsem.runtime.stages.tiling import TilingConfig
from samsem.train.augment import AugmentConfig
from samsem.train.config import family_config
from samsem.train.data import TrainDataset, discover
from samsem.train.task import make_task


@pytest.fixture(scope="module")
def dataset(lines_dataset) -> Path:
    """One IC with four 128-px images of horizontal lines."""
    return lines_dataset(4, 128, seed=1)


def test_lite_defaults_differ_from_sam2() -> None:
    lite, sam2 = family_config("lite"), family_config("sam2")
    assert (lite.loss.alpha, lite.loss.betti_weight, lite.input_size) == (0.5, 0.0, 512)
    assert (sam2.loss.alpha, sam2.lr) == (0.6, 1.111e-5)
    with pytest.raises(ConfigError, match="family"):
        family_config("unet")


def test_a_few_lite_steps_lower_the_loss(dataset: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = family_config("lite").with_overrides(
        data=(str(dataset),),
        out=str(tmp_path),
        model_config="tiny",
        input_size=64,
        patch_size=64,
        device="cpu",
        progress=False,
        lr=3e-3,
    )
    task = make_task(cfg, torch.device("cpu"))
    ds = TrainDataset(discover(dataset), "single", 64, AugmentConfig(p=0.0), TilingConfig(64), seed=0)
    batch = {k: torch.stack([ds[i][k] for i in range(4)]) for k in ds[0]}
    opt = torch.optim.AdamW(task.trainable_parameters(), lr=3e-3)
    first = last = None
    for _ in range(40):
        out = task.loss(batch, cfg.loss, betti_on=False)
        opt.zero_grad()
        out.total.backward()
        opt.step()
        first = out.total.item() if first is None else first
        last = out.total.item()
    assert last < 0.75 * first, (first, last)


def test_train_lite_cli_checkpoint_segments(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [
        "train",
        "--family",
        "lite",
        "--config",
        "tiny",
        "--data",
        str(dataset),
        "--out",
        str(run),
        "--input-size",
        "64",
        "--patch-size",
        "64",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--esd-border",
        "4",
        "--esd-min-area",
        "4",
    ]
    assert main(args) == 0
    assert (run / "best.pt").is_file() and (run / "log.csv").is_file()
    out = tmp_path / "seg"
    assert (
        main(
            ["segment", str(dataset / "images" / "im0.png"), "-o", str(out), "--model", str(run / "best.pt")]
        )
        == 0
    )
    report = json.loads((out / "im0.report.json").read_text())
    assert report["model"]["family"] == "lite"
