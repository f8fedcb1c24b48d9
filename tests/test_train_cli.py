"""`samsem train` and `samsem tune` end to end on CPU (tiny SAM2 at 64 px, 96-px synthetic images)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from samsem.cli import main

TINY = [
    "--config", "tiny", "--input-size", "64", "--patch-size", "64", "--target", "model1", "--batch-size", "2",
    "--device", "cpu", "--esd-border", "4", "--esd-min-area", "4", "--val-batch-size", "4", "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="module")
def dataset(lines_dataset) -> Path:
    """One IC with five 96-px line images (3 train, 1 val, 1 test)."""
    return lines_dataset(5, 96, seed=1, vertical=True, prefix="a")


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_train_writes_run_and_resumes_from_out_alone(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(dataset), "--out", str(run), "--epochs", "1", *TINY]) == 0
    assert "best epoch 1/1" in capsys.readouterr().out  # counted from 1, like the epoch lines
    for name in ("last.pt", "best.pt", "log.csv", "curves.png", "config.json", "splits.json"):
        assert (run / name).is_file(), name
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model_config"] == "tiny" and cfg["loss"]["alpha"] == 0.6 and cfg["epochs"] == 1
    splits = json.loads((run / "splits.json").read_text())
    assert [len(splits[k]) for k in ("train", "val", "test", "ood")] == [3, 1, 1, 0]
    # resume with only --out and more epochs: settings come from RUN/config.json
    assert main(["train", "--out", str(run), "--epochs", "2", "--no-progress"]) == 0
    assert [r["epoch"] for r in _rows(run / "log.csv")] == ["0", "1"]
    # a changed setting is refused with a message instead of silently mixing runs
    assert main(["train", "--out", str(run), "--lr", "0.5", "--no-progress"]) == 2
    assert "different settings" in capsys.readouterr().err
    assert json.loads((run / "config.json").read_text())["lr"] == cfg["lr"]  # the refused run changed nothing


def test_train_reports_bad_input(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r"), *TINY]) == 2
    assert "no training data" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r"), *TINY]) == 2
    assert "dataset folder not found" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # a failed start leaves no empty run folder


def test_train_interrupted_before_the_first_epoch_says_nothing_to_resume(
    dataset, tmp_path, capsys, monkeypatch
):
    import samsem.train.loop as loop

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "train", interrupted)
    assert main(["train", "--data", str(dataset), "--out", str(tmp_path / "r"), *TINY]) == 130
    assert "nothing to resume" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_train_stopped_in_its_first_epoch_removes_the_folders_it_made(dataset, tmp_path, capsys, monkeypatch):
    """SIGTERM during the first epoch (config.json and splits.json written, no last.pt): exit 143, no
    "rerun to resume", and the run folder and the parents this run created are gone."""
    import samsem.train.loop as loop
    from samsem.cli import Terminated

    def terminated(*args, **kwargs):
        raise Terminated

    monkeypatch.setattr(loop, "validate", terminated)
    run = tmp_path / "new" / "deep" / "r"
    assert main(["train", "--data", str(dataset), "--out", str(run), "--epochs", "1", *TINY]) == 143
    err = capsys.readouterr().err
    assert "terminated (SIGTERM) before the first epoch finished; nothing to resume" in err
    assert "rerun to resume" not in err
    assert not (tmp_path / "new").exists()


def test_a_failed_start_keeps_folders_it_did_not_make(dataset, tmp_path, capsys, monkeypatch):
    import samsem.train.loop as loop
    from samsem.errors import ConfigError

    def broken(*args, **kwargs):
        raise ConfigError("no such model")

    monkeypatch.setattr(loop, "make_task", broken)
    mine = tmp_path / "mine"
    mine.mkdir()
    for run in (mine, tmp_path / "parent" / "r"):
        (tmp_path / "parent").mkdir(exist_ok=True)
        assert main(["train", "--data", str(dataset), "--out", str(run), *TINY]) == 2
        assert "no such model" in capsys.readouterr().err
    assert mine.is_dir() and (tmp_path / "parent").is_dir() and not (tmp_path / "parent" / "r").exists()


def test_tune_two_trials_completes_and_resumes(dataset, tmp_path, capsys):
    import optuna

    out = tmp_path / "tune"
    args = ["tune", "--data", str(dataset), "--out", str(out), "--epochs", "1", "--step", "1", *TINY]
    assert main([*args, "--trials", "2"]) == 0
    storage = f"sqlite:///{(out / 'optuna.db').resolve()}"
    study = optuna.load_study(study_name="samsem-step1", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    best = json.loads((out / "step1" / "best.json").read_text())
    assert Path(best["checkpoint"]).is_file() and set(best["params"]) >= {"lr", "loss__alpha", "augment__p"}
    # step-1 trials train without the Betti term
    trial_cfg = json.loads((Path(best["checkpoint"]).parent / "config.json").read_text())
    assert trial_cfg["loss"]["betti_weight"] == 0.0

    # rerunning with the same target runs nothing; asking for one more runs exactly one
    assert main([*args, "--trials", "2"]) == 0
    assert len(optuna.load_study(study_name="samsem-step1", storage=storage).trials) == 2
    assert main([*args, "--trials", "3"]) == 0
    assert len(optuna.load_study(study_name="samsem-step1", storage=storage).trials) == 3

    # step 2 starts from the best step-1 checkpoint with the Betti term on
    step2 = [
        "tune",
        "--data",
        str(dataset),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--step",
        "2",
        "--trials",
        "1",
    ]
    assert main([*step2, *TINY]) == 0
    best2 = json.loads((out / "step2" / "best.json").read_text())
    cfg2 = json.loads((Path(best2["checkpoint"]).parent / "config.json").read_text())
    assert cfg2["init_checkpoint"] == best["checkpoint"]
    assert (
        cfg2["betti_start_epoch"] == 0
        and cfg2["loss"]["betti_weight"] == best2["params"]["loss__betti_weight"]
    )
    assert "step 2: best validation ESD rate" in capsys.readouterr().out


def test_interrupted_trials_are_retried_with_their_parameters(tmp_path):
    import optuna
    from optuna.distributions import FloatDistribution

    from samsem.train.tune import retry_interrupted

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s")
    dist = {"lr": FloatDistribution(1e-6, 1e-3, log=True)}
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, params={"lr": 1e-4},
                                              distributions=dist, value=0.5))  # fmt: skip
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, params={"lr": 2e-4},
                                              distributions=dist))  # fmt: skip
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, params={"lr": 1e-4},
                                              distributions=dist))  # fmt: skip
    assert retry_interrupted(study) == 1  # the 1e-4 run finished since; only 2e-4 is retried
    waiting = [t for t in study.trials if t.state.name == "WAITING"]
    assert len(waiting) == 1 and waiting[0].system_attrs["fixed_params"] == {"lr": 2e-4}
    assert retry_interrupted(study) == 0
