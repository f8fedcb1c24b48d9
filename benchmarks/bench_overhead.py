"""Runtime overhead: what the pipeline costs per model input when the model itself costs nothing.

The stand-in model is SAM2-shaped (1024-px input, point prompts, 256x256 low-resolution output) and
answers at once: its probabilities are the input thresholded at 0.5 and sampled every 4th pixel, score 1.
Every millisecond measured is therefore the runtime's: intensity levels, model inputs, prompts, the
per-patch decision, stitching and the final clean-up. The image is a procedural SEM-like line pattern
(uint8, bright Manhattan lines on a darker background with noise), made once per size.

For each size the two-scale pipeline runs ``--repeat`` times on CPU (the stages over numpy) and, when
CUDA is present (or ``--device cpu-torch`` is given), on the device-resident path (the stages over
torch); the fastest run is reported: wall ms per model input, the process's CPU ms per model input (all
threads; on a shared machine the wall time also carries other processes' load, the CPU time less so)
and each stage's ms per model input (stage times are summed over threads, so with several workers they
can add up to more than the wall time). The load average is printed with every row.

    python benchmarks/bench_overhead.py --sizes 1024,4096,8192 [--device cpu,cuda] [--flatten 0]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np


class StandIn:
    """SAM2-shaped stand-in segmenter: probs = (input >= 0.5) at every 4th pixel, scores 1.

    ``predict`` takes numpy (B, S, S) float32 and (B, P, 2) points; ``predict_tensors`` the same as torch
    tensors on any device (what the device-resident pipeline calls).
    """

    uses_prompts = True

    def __init__(self, input_size: int = 1024, device: str = "cpu") -> None:
        self.input_size = input_size
        self.tensor_device = device  # declares the tensor path (a TensorSegmenter)

    def predict(self, images: np.ndarray, points: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """images (B, S, S) float32 -> probs (B, S/4, S/4) float32 {0, 1}, scores (B,) ones."""
        assert points is not None and points.shape[0] == images.shape[0]
        return (images[:, ::4, ::4] >= 0.5).astype(np.float32), np.ones(len(images), np.float32)

    def predict_tensors(self, images: Any, points: Any) -> tuple[Any, Any]:
        """Torch version of :meth:`predict` (tensors stay on their device)."""
        import torch

        assert points is not None and points.shape[0] == images.shape[0]
        probs = (images[:, ::4, ::4] >= 0.5).to(torch.float32)
        return probs, torch.ones(images.shape[0], dtype=torch.float32, device=images.device)


def sem_like(size: int, seed: int = 0) -> np.ndarray:
    """(size, size) uint8 SEM-like image: Manhattan lines 4-14 px wide (level ~190) on ~70, noise sd 12."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), bool)
    pitch = 32
    for y in range(8, size - 16, pitch):  # horizontal routes with gaps
        w = int(rng.integers(4, 15))
        x = 0
        while x < size:
            length = int(rng.integers(size // 16, size // 3 + 2))
            mask[y : y + w, x : x + length] = True
            x += length + int(rng.integers(20, 120))
    for x in rng.integers(0, size - 16, size // 24):  # vertical jogs
        y0 = int(rng.integers(0, size))
        mask[y0 : y0 + int(rng.integers(40, 400)), x : x + int(rng.integers(4, 12))] = True
    img = np.where(mask, 190, 70).astype(np.float32)
    img += rng.normal(0.0, 12.0, (size, size)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_pipeline(device: str, batch_size: int, workers: int | None, flatten: int = 128) -> Any:
    from samsem.runtime.config import PipelineConfig
    from samsem.runtime.pipeline import Pipeline

    cfg = PipelineConfig(batch_size=batch_size, flatten=flatten)
    kwargs: dict[str, Any] = {}
    if workers is not None:
        kwargs["workers"] = workers
    if device != "cpu":
        kwargs["device"] = "cpu" if device == "cpu-torch" else device
    seg = StandIn(1024, "cpu" if device == "cpu-torch" else device)
    return Pipeline(seg, seg, cfg, **kwargs)


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_once(pipe: Any, image: np.ndarray) -> tuple[float, float, dict[str, float], int, np.ndarray]:
    """(wall seconds, CPU seconds, stage timings, model inputs, mask) of one image through ``pipe``."""
    c0, t0 = cpu_seconds(), time.perf_counter()
    res = pipe.segment(image, name="bench")
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    n = pipe.count_inputs(*image.shape)
    return wall, cpu, dict(res.report.timings_s), n, res.mask


def load_average() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1024,4096,8192", help="comma-separated image sides")
    ap.add_argument("--device", default=None, help="cpu, cuda, cpu-torch (comma-separated; default cpu+cuda)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=None, help="CPU worker threads (default: the pipeline's)")
    ap.add_argument(
        "--flatten", type=int, default=128, help="background-flattening window, 0 = off (default 128)"
    )
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args()

    import torch

    devices = (
        args.device.split(",") if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    )
    rows = []
    print(f"# load average before: {load_average()}; cpu cores: {os.cpu_count()}")
    for device in devices:
        pipe = make_pipeline(device, args.batch_size, args.workers, args.flatten)
        pipe.segment(sem_like(600, seed=1))  # warm up JIT kernels and lazy imports
        for size in (int(s) for s in args.sizes.split(",")):
            image = sem_like(size)
            best: tuple[float, float, dict[str, float], int, np.ndarray] | None = None
            walls = []
            for _ in range(args.repeat):
                out = run_once(pipe, image)
                walls.append(out[0])
                if best is None or out[0] < best[0]:
                    best = out
            assert best is not None
            wall, cpu, timings, n, mask = best
            row = {
                "device": device,
                "size": size,
                "inputs": n,
                "wall_s": round(wall, 4),
                "walls_s": [round(w, 4) for w in walls],
                "ms_per_input": round(1e3 * wall / n, 3),
                "cpu_ms_per_input": round(1e3 * cpu / n, 3),
                "stage_ms_per_input": {k: round(1e3 * v / n, 3) for k, v in timings.items()},
                "foreground": round(float(mask.mean()), 5),
                "mask_sha1": hashlib.sha1(np.ascontiguousarray(mask).tobytes()).hexdigest(),
                "load_average": load_average(),
            }
            rows.append(row)
            stages = " ".join(f"{k} {v:.2f}" for k, v in row["stage_ms_per_input"].items())
            print(
                f"{device:9s} {size:5d}² {n:4d} inputs  {wall:7.3f} s  {row['ms_per_input']:6.2f} ms/input  "
                f"(CPU {row['cpu_ms_per_input']:6.2f} ms/input)  "
                f"[{stages}]  load {row['load_average']}"
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
