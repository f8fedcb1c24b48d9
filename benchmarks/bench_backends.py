"""Engine throughput: tiles/s, ms/tile, peak memory and the ratio to the compute floor per backend.

For each SAM2 config (random weights; ``tiny`` is the ~0.7 M-parameter test model) at ``--image-size``
a bundle is exported to a temporary directory (ONNX; TensorRT when tensorrt and CUDA are present;
AOTInductor with ``--aoti``), then every available backend/precision runs the whole model (encoder +
decoder, ``--points`` prompts) at each ``--batch``; each figure is the best of ``--repeat`` timed runs
after one warm-up. The compute floor is FLOPs per tile (counted with
``torch.utils.flop_counter.FlopCounterMode`` on the PyTorch model, multiply-add = 2) divided by the
peak rate: ``--peak-tflops`` (default on CUDA: 989, H100 dense fp16), on CPU the measured fp32 matmul
rate of this machine. ratio = measured ms/tile / floor ms/tile (1.0 would be peak-bound).

Peak memory: CUDA: ``torch.cuda.max_memory_allocated`` during the timed runs (TensorRT's own
activation memory is not allocated through torch and is not included); CPU: the process RSS sampled
every 20 ms during the runs.

    python benchmarks/bench_backends.py --config tiny,sam2.1_hiera_t --image-size 256 --batch 1,4,16
    python benchmarks/bench_backends.py --config sam2.1_hiera_t,sam2.1_hiera_l --image-size 1024 \\
        --device cuda --batch 1,4,16 --aoti
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from samsem.export.bundle_writer import ExportOptions, write_bundle
from samsem.runtime.bundle.open import available_backends, open_bundle
from samsem.runtime.load import load_models
from samsem.runtime.models import sam2 as sm
from samsem.runtime.models.registry import save_model


def spec_for(config: str, size: int) -> sm.SAM2Spec:
    return sm.tiny_spec(size) if config == "tiny" else sm.SAM2Spec(config=config, image_size=size)


def flops_per_tile(model: sm.SAM2ImageModel, size: int, points: int) -> float:
    """FLOPs of one forward at batch 1 (FlopCounterMode counts a multiply-add as 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    args = (torch.zeros(1, 3, size, size), torch.ones(1, points, 2), torch.ones(1, points))
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(*args)
    return float(counter.get_total_flops())


def cpu_matmul_tflops(n: int = 1536, repeat: int = 20) -> float:
    """Measured fp32 matmul rate of this CPU (the CPU 'peak' for the floor)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeat))
    return 2 * n**3 / best / 1e12


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class RssSampler:
    """Peak resident set size of this process while active (Linux /proc), sampled every 20 ms."""

    def __enter__(self) -> RssSampler:
        self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * 4096


def bench_case(backend, size: int, batch: int, points: int, repeat: int, device: str) -> tuple[float, float]:
    """(best seconds per batch, peak memory bytes) of backend.run on random inputs."""
    rng = np.random.default_rng(0)
    inputs = {
        "image": rng.normal(size=(batch, 3, size, size)).astype(np.float32),
        "point_coords": (rng.random((batch, points, 2)) * size).astype(np.float32),
        "point_labels": np.ones((batch, points), np.float32),
    }
    backend.run(inputs)  # warm-up (lazy initialisation, autotuning)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with RssSampler() as rss:
        best = min(_timed(lambda: backend.run(inputs)) for _ in range(repeat))
    peak = torch.cuda.max_memory_allocated() if cuda else rss.peak
    return best, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--config", default="tiny,sam2.1_hiera_t", help="comma-separated configs (tiny = test model)"
    )
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--batch", default="1,4,16")
    ap.add_argument("--points", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--aoti", action="store_true", help="also compile AOTInductor packages (slow)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="peak rate for the floor")
    args = ap.parse_args()
    batches = [int(b) for b in args.batch.split(",")]
    cuda = args.device.startswith("cuda")
    peak = args.peak_tflops or (989.0 if cuda else cpu_matmul_tflops())
    source = "given" if args.peak_tflops or cuda else "measured fp32 matmul"
    print(f"device {args.device}, peak {peak:.3f} TFLOP/s ({source})")
    formats = ["onnx", "torch"]
    if cuda and available_trt():
        formats.append("trt")
    if args.aoti:
        formats.append("aoti")
    header = f"{'config':16s} {'backend':12s} {'prec':5s} {'batch':>5s} {'tiles/s':>9s} {'ms/tile':>9s} "
    print(header + f"{'peak MB':>9s} {'GFLOP/tile':>10s} {'x floor':>8s}")
    for config in args.config.split(","):
        spec = spec_for(config, args.image_size)
        model = sm.SAM2ImageModel(sm.build(spec, seed=0))
        gflop = flops_per_tile(model, args.image_size, args.points) / 1e9
        floor_ms = gflop / peak  # GFLOP / (TFLOP/s) = ms
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = Path(tmp) / "model.pt"
            save_model(ckpt, model, spec)
            del model
            options = ExportOptions(
                formats=tuple(formats),
                fp16=cuda,
                batch_opt=max(batches),
                batch_max=max(batches),
                points_max=args.points,
                aoti_device=args.device,
            )
            t0 = time.perf_counter()
            write_bundle(Path(tmp) / "bundle", [ckpt], options=options)
            took = time.perf_counter() - t0
            print(f"# {config} at {args.image_size}: exported {','.join(formats)} in {took:.0f} s")
            usable = available_backends(open_bundle(Path(tmp) / "bundle"), args.device)
            cases = [("torch", p) for p in (("fp32", "bf16", "fp16") if cuda else ("fp32", "bf16"))]
            cases += [(b, None) for b in ("onnxruntime", "tensorrt", "aoti") if usable[b] is None]
            for backend_name, precision in cases:
                loaded = load_models(
                    str(Path(tmp) / "bundle"),
                    backend=backend_name,
                    device=args.device,
                    precision=precision or "fp32",
                )
                prec = loaded.info.to_json()["precision"]
                for batch in batches:
                    sec, mem = bench_case(
                        loaded.model1.backend, args.image_size, batch, args.points, args.repeat, args.device
                    )
                    ms = 1e3 * sec / batch
                    print(
                        f"{config:16s} {backend_name:12s} {prec:5s} {batch:5d} {batch / sec:9.2f} {ms:9.2f} "
                        f"{mem / 1e6:9.0f} {gflop:10.2f} {ms / floor_ms:8.1f}"
                    )
                del loaded


def available_trt() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None


if __name__ == "__main__":
    main()
