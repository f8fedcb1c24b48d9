"""Measure the peak memory of training steps, to calibrate samsem.train.memory's estimate.

    python tools/calibrate_train_memory.py sam2:sam2.1_hiera_t:256:1 sam2:sam2.1_hiera_t:256:2

Each FAMILY:CONFIG:INPUT:BATCH runs in a fresh process on the CPU: the model, an AdamW optimizer and two
optimizer steps (the second holds Adam's states) on a batch of that size from a small synthetic
dataset, with the Betti term off (``--betti`` on). It prints one JSON line per run: the growth of the
process's peak resident memory (ru_maxrss) from just before the model is built, the parameter count, and
the wall time. Runs of batch 1 and 2 at one input size give the fixed part (weights, gradients, Adam
states, allocator) and the activation memory per sample; a run at another input size checks that the
latter grows with the input area.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _measure(family: str, config: str, size: int, batch: int, betti: bool, data: str) -> dict:
    import torch

    from samsem.runtime.stages.tiling import TilingConfig
    from samsem.train.config import family_config
    from samsem.train.data import TrainDataset, discover_all
    from samsem.train.task import make_task

    torch.set_num_threads(2)
    cfg = family_config(family).with_overrides(
        data=(data,), model_config=config, input_size=size, batch_size=batch, device="cpu", target="model1"
    )
    samples = discover_all(cfg.data)
    ds = TrainDataset(samples, "model1", size, cfg.augment, TilingConfig(), 0)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, sampler=[i % len(ds) for i in range(batch)])
    item = next(iter(loader))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    task = make_task(cfg, torch.device("cpu"))
    params = task.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=1e-5)
    for _ in range(2):
        res = task.loss(item, cfg.loss, betti)
        res.total.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "family": family,
        "config": config,
        "input_size": size,
        "batch": batch,
        "betti": betti,
        "params": sum(p.numel() for p in task.model.parameters()),
        "trainable": sum(p.numel() for p in params),
        "peak_growth_mb": round((peak - base) / 1024, 1),  # ru_maxrss is in KiB on Linux
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="FAMILY:CONFIG:INPUT:BATCH")
    p.add_argument("--betti", action="store_true", help="with the Betti-matching term")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one measurement in this process
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        family, config, size, batch = args.one.split(":")
        print(json.dumps(_measure(family, config, int(size), int(batch), args.betti, args.data)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        from samsem.cli import main as samsem

        samsem(["synth", "--preset", "easy", "--count", "2", "--size", "1024", "--out", str(Path(tmp) / "d")])
        for run in args.runs:
            cmd = [sys.executable, __file__, "x", "--one", run, "--data", str(Path(tmp) / "d")]
            cmd += ["--betti"] if args.betti else []
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            print(out.stdout.strip() or f"{run}: failed: {out.stderr.strip().splitlines()[-1:]}", flush=True)


if __name__ == "__main__":
    main()
