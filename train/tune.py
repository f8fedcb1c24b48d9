"""``samsem tune``: Optuna search over the training hyperparameters, in the paper's two steps.

* Step 1 (pixel loss only, lambda = 0): augmentation probability and intensity, learning rate, weight
  decay and alpha.
* Step 2 (from the best step-1 model, with its step-1 settings, Betti term on from the first epoch):
  lambda, filtration, barcode length threshold and push-unmatched.

Each trial is a training run (:func:`samsem.train.loop.train`) in ``OUT/step<k>/trial-<hash of its
parameters>``; the objective is the best validation ESD rate of the run (minimised) and every epoch's
rate is reported to a Hyperband pruner. Studies ("<name>-step1", "<name>-step2") live in the given
storage (default SQLite in OUT), so a search resumes: ``--trials`` is the total number of finished
(complete or pruned) trials wanted, and a trial that was interrupted is run again with the same
parameters, continuing its run folder from ``last.pt``. One tune process per study at a time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from samsem.errors import ConfigError, InputError
from samsem.train.config import RESUMABLE_CHANGES, TrainConfig

FINISHED = ("COMPLETE", "PRUNED")


def suggest(trial: Any, step: int) -> dict[str, Any]:
    """The step's search space: TrainConfig overrides (``outer__inner`` keys) drawn from ``trial``."""
    if step == 1:
        return {
            "augment__p": trial.suggest_float("augment__p", 0.0, 1.0),
            "augment__intensity": trial.suggest_float("augment__intensity", 0.05, 1.0),
            "lr": trial.suggest_float("lr", 1e-6, 1e-3, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-7, 1e-2, log=True),
            "loss__alpha": trial.suggest_float("loss__alpha", 0.0, 1.0),
        }
    return {
        "loss__betti_weight": trial.suggest_float("loss__betti_weight", 0.01, 2.0, log=True),
        "loss__filtration": trial.suggest_categorical(
            "loss__filtration", ["sublevel", "superlevel", "bothlevels"]
        ),
        "loss__barcode_length_threshold": trial.suggest_float("loss__barcode_length_threshold", 0.0, 0.5),
        "loss__push_unmatched_to_1_0": trial.suggest_categorical(
            "loss__push_unmatched_to_1_0", [True, False]
        ),
    }


def step_config(
    base: TrainConfig, step: int, step1_params: dict[str, Any] | None, init: str | None
) -> TrainConfig:
    """The config every trial of ``step`` starts from: step 1 trains without the Betti term; step 2
    takes the best step-1 settings and weights and switches the Betti term on from epoch 0."""
    if step == 1:
        return base.with_overrides(loss__betti_weight=0.0)
    if step1_params is None or init is None:
        raise ConfigError("step 2 needs a finished step 1 (its best parameters and checkpoint)")
    return base.with_overrides(**step1_params, init_checkpoint=init, betti_start_epoch=0)


def trial_dir(out: Path, step: int, cfg: TrainConfig) -> Path:
    """Run folder of a trial, named by a hash of its settings (those a resume may not change), so a
    retried trial continues the same run and a changed base config never reuses a folder."""
    settings = {k: v for k, v in cfg.to_dict().items() if k not in RESUMABLE_CHANGES and k != "out"}
    key = json.dumps(settings, sort_keys=True, default=str)
    return out / f"step{step}" / f"trial-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def retry_interrupted(study: Any) -> int:
    """Enqueue the parameters of failed or abandoned (RUNNING at start-up) trials that were not
    finished since; returns how many were enqueued."""
    from optuna.trial import TrialState

    def key(t: Any) -> str:  # a waiting trial has its parameters only as "fixed_params"
        return json.dumps(t.params or t.system_attrs.get("fixed_params", {}), sort_keys=True, default=str)

    done = {key(t) for t in study.trials if t.state.name in (*FINISHED, "WAITING")}
    queued = 0
    for t in study.trials:
        if t.state in (TrialState.FAIL, TrialState.RUNNING) and t.params and key(t) not in done:
            study.enqueue_trial(t.params)
            done.add(key(t))
            queued += 1
    return queued


def run_step(
    base: TrainConfig,
    step: int,
    n_trials: int,
    storage: str,
    study_name: str,
    step1: tuple[dict[str, Any], str] | None = None,
) -> Any:
    """Run (or resume) one step until ``n_trials`` trials are finished; returns the optuna Study.

    base.out is the search folder; step1: (best step-1 params, its best.pt) for step 2.
    """
    import optuna

    from samsem.train.loop import train

    out = Path(base.out)
    cfg0 = step_config(base, step, *(step1 or (None, None)))
    study = optuna.create_study(
        study_name=f"{study_name}-step{step}",
        storage=storage,
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=base.seed),
        pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=cfg0.epochs),
        load_if_exists=True,
    )
    retry_interrupted(study)

    def objective(trial: optuna.Trial) -> float:
        cfg = cfg0.with_overrides(**suggest(trial, step))
        run_dir = trial_dir(out, step, cfg)
        trial.set_user_attr("run_dir", str(run_dir))
        cfg = replace(cfg, out=str(run_dir))

        def report(row: dict[str, Any]) -> None:
            rate = row.get("val_rate")
            if rate is None:
                raise InputError(None, "tuning needs validation images", "a larger dataset or --val-fraction")
            trial.report(min(float(rate), 1e9), row["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {row['epoch']}: validation ESD rate {rate:.4f}")

        result = train(cfg, on_epoch=report)
        return min(result.best_rate, 1e9)

    finished = sum(t.state.name in FINISHED for t in study.trials)
    if finished < n_trials:
        study.optimize(objective, n_trials=n_trials - finished, catch=())
    return study


def best_of(study: Any) -> tuple[dict[str, Any], str, float]:
    """(params, best.pt path, value) of the study's best complete trial."""
    try:
        best = study.best_trial
    except ValueError:
        raise ConfigError(f"study {study.study_name} has no complete trial yet") from None
    return dict(best.params), str(Path(best.user_attrs["run_dir"]) / "best.pt"), float(best.value)


def tune(
    base: TrainConfig, steps: tuple[int, ...], n_trials: int, storage: str | None, study_name: str
) -> dict:
    """Run the requested steps (1, 2 or both, in order); writes OUT/step<k>/best.json and returns
    {step: {"params", "checkpoint", "value", "trials"}}."""
    from samsem.io import write_json
    from samsem.runtime.outputs import prepare_dir

    out = Path(base.out)
    prepare_dir(out)  # InputError when a file is in the way
    url = storage or f"sqlite:///{(out / 'optuna.db').resolve()}"
    summary: dict[int, dict[str, Any]] = {}
    step1: tuple[dict[str, Any], str] | None = None
    for step in sorted(steps):
        if step == 2 and step1 is None:
            import optuna

            step1 = best_of(optuna.load_study(study_name=f"{study_name}-step1", storage=url))[:2]
        study = run_step(base, step, n_trials, url, study_name, step1)
        params, ckpt, value = best_of(study)
        summary[step] = {"params": params, "checkpoint": ckpt, "value": value, "trials": len(study.trials)}
        write_json(out / f"step{step}" / "best.json", summary[step])
        if step == 1:
            step1 = (params, ckpt)
    return summary


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``tune`` subcommand."""
    from samsem.train.cli import add_config_options

    parser = subparsers.add_parser(
        "tune",
        help="Optuna hyperparameter search (Hyperband, validation ESD rate)",
        description="Two-step Optuna search (step 1: augmentation, lr, weight decay, alpha without the Betti "
        "term; step 2: Betti parameters from the best step-1 model). Resumes from its storage. The training "
        "options are `samsem train`'s, with the same defaults.",
    )
    add_config_options(parser)
    parser.add_argument("--trials", type=int, required=True, help="finished trials wanted per step")
    parser.add_argument(
        "--step", type=int, choices=(1, 2), action="append", help="run only this step (repeatable)"
    )
    parser.add_argument(
        "--storage", help="Optuna storage URL (default: sqlite:///OUT/optuna.db, a file in the output folder)"
    )
    parser.add_argument("--study", default="samsem", help="study name prefix (default samsem)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the search and print the best settings. Returns the exit code."""
    from samsem.train.cli import config_from_args

    if args.trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {args.trials}")
    base = config_from_args(args, Path(args.out))
    summary = tune(base, tuple(args.step or (1, 2)), args.trials, args.storage, args.study)
    for step, info in summary.items():
        value = "inf" if not math.isfinite(info["value"]) else f"{info['value']:.4f}"
        print(f"step {step}: best validation ESD rate {value} with {info['params']} -> {info['checkpoint']}")
    return 0
