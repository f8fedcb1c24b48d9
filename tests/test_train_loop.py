"""Training loop on CPU with a tiny random SAM2 at 64 px and synthetic line images."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from samsem.errors import ConfigError
from samsem.runtime.stages.tiling import TilingConfig
from samsem.train.augment import AugmentConfig
from samsem.train.config import TrainConfig
from samsem.train.data import TrainDataset, discover
from samsem.train.loop import lr_factor, train
from samsem.train.task import make_task


@pytest.fixture(scope="module")
def dataset(lines_dataset) -> Path:
    """One IC with four 96-px images of horizontal metal lines (split 2 train, 1 val, 1 test)."""
    return lines_dataset(4, 96)


def _cfg(dataset: Path, out: Path, **kw) -> TrainConfig:
    base = TrainConfig(
        data=(str(dataset),),
        out=str(out),
        model_config="tiny",
        input_size=64,
        patch_size=64,
        epochs=2,
        betti_start_epoch=1,
        batch_size=4,
        lr=1e-3,
        device="cpu",
        augment=AugmentConfig(p=0.5, intensity=0.3),
        esd_border=4,
        esd_min_area=4,
        val_batch_size=4,
        progress=False,
    )
    return base.with_overrides(**kw)


def _batch(dataset: Path, n: int = 4) -> dict[str, torch.Tensor]:
    ds = TrainDataset(discover(dataset), "model2", 64, AugmentConfig(p=0.0), TilingConfig(64), seed=0)
    return torch.utils.data.default_collate([ds[i] for i in range(n)])


def test_a_few_steps_lower_the_loss(dataset, tmp_path):
    cfg = _cfg(dataset, tmp_path)
    task = make_task(cfg, torch.device("cpu"))
    batch = _batch(dataset)
    opt = torch.optim.AdamW(task.trainable_parameters(), lr=3e-3)
    losses = []
    for _ in range(5):
        res = task.loss(batch, cfg.loss, betti_on=False)
        opt.zero_grad()
        res.total.backward()
        opt.step()
        losses.append(res.total.item())
    assert losses[-1] < 0.85 * losses[0]


def test_frozen_components_do_not_change(dataset, tmp_path):
    cfg = _cfg(dataset, tmp_path, train_image_encoder=False, train_prompt_encoder=False)
    task = make_task(cfg, torch.device("cpu"))
    before = {k: v.clone() for k, v in task.weights().items()}
    opt = torch.optim.AdamW(task.trainable_parameters(), lr=1e-2, weight_decay=0.1)
    batch = _batch(dataset)
    for _ in range(2):
        res = task.loss(batch, cfg.loss, betti_on=True)
        opt.zero_grad()
        res.total.backward()
        opt.step()
    after = task.weights()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("sam_mask_decoder.") for k in changed)
    assert not any(k.startswith(("image_encoder.", "sam_prompt_encoder.")) for k in changed)


def test_resume_reproduces_the_uninterrupted_run(dataset, tmp_path):
    full = train(_cfg(dataset, tmp_path / "full", batch_size=5))
    assert [r["betti_on"] for r in full.history] == [0, 1]
    assert "train_betti" in full.history[1] and "train_betti" not in full.history[0]

    def stop_after_first(row):
        if row["epoch"] == 0:
            raise KeyboardInterrupt

    cut = _cfg(dataset, tmp_path / "cut", batch_size=5)
    with pytest.raises(KeyboardInterrupt):
        train(cut, on_epoch=stop_after_first)
    rows = []
    resumed = train(cut, on_epoch=rows.append)
    assert [r["epoch"] for r in rows] == [0, 1]  # restored row replayed, then the new one

    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    for ra, rb in zip(full.history, resumed.history, strict=True):
        assert ra["train_loss"] == rb["train_loss"] and ra.get("val_rate") == rb.get("val_rate")

    run = tmp_path / "full"
    with (run / "log.csv").open() as f:
        log = list(csv.DictReader(f))
    assert [r["epoch"] for r in log] == ["0", "1"] and log[1]["train_betti"] != ""
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (run / "best.pt").is_file() and full.best_epoch in (0, 1)

    # the best checkpoint is what the runtime loads
    from samsem.runtime.config import PipelineConfig
    from samsem.runtime.load import load_pipeline

    pcfg = PipelineConfig(tiling=TilingConfig(64), single_scale=2)
    result = load_pipeline(str(run / "best.pt"), config=pcfg).segment(np.full((96, 96), 100, np.uint8))
    assert result.mask.shape == (96, 96)


def test_resume_refuses_changed_settings(dataset, tmp_path):
    cfg = _cfg(dataset, tmp_path, epochs=1, target="model1")
    train(cfg)
    with pytest.raises(ConfigError, match="lr"):
        train(replace(cfg, lr=1e-4))
    # more epochs is allowed: the run continues
    more = train(replace(cfg, epochs=2))
    assert [r["epoch"] for r in more.history] == [0, 1]


def test_lr_schedule():
    assert lr_factor(0, 100, 0, "constant") == 1.0
    assert lr_factor(0, 100, 4, "cosine") == 0.25
    assert lr_factor(4, 100, 4, "cosine") == pytest.approx(1.0)
    assert lr_factor(100, 100, 4, "cosine") == pytest.approx(0.0)


@pytest.mark.gpu
def test_cuda_bf16_epoch(dataset, tmp_path):
    res = train(_cfg(dataset, tmp_path, device="cuda", amp=True, epochs=1))
    assert np.isfinite(res.history[0]["train_loss"])


def test_training_registers_a_task_and_defaults_per_runtime_family() -> None:
    """Training keys its tasks and defaults by the runtime registry's family names (the runtime names no
    training code); a task for an unknown family, or a second one for a family, is refused."""
    from samsem.runtime.models.registry import family_names
    from samsem.train.config import FAMILY_DEFAULTS
    from samsem.train.task import SAM2Task, register_task, task_class

    assert set(FAMILY_DEFAULTS) == set(family_names())
    for name in family_names():
        assert task_class(name).family == name
    with pytest.raises(ConfigError, match="no training task for model family 'unet'"):
        task_class("unet")

    class Unknown(SAM2Task):
        family = "unet"

    with pytest.raises(ConfigError, match="no runtime model family 'unet'"):
        register_task(Unknown)
    with pytest.raises(ConfigError, match="'sam2' already has the training task SAM2Task"):
        register_task(type("Again", (SAM2Task,), {}))
