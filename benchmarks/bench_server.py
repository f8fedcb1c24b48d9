"""gRPC service throughput over loopback at 1, 4 and 16 concurrent clients vs calling the runtime directly.

A `samsem serve` process (default settings: max batch 16, max delay 5 ms, request batch 4, 8 requests
computing at once) is started per model; each client is a thread with its own channel sending raw
uint8 images with the streaming Segment call, one after another. The baseline runs the same images
through ``Pipeline.segment_many`` in this process (batch size 8), in the main thread and in a worker
thread. The table gives requests/s, model inputs (tiles)/s, throughput as a ratio of the faster
direct run (> 1: faster than calling the runtime directly), mean latency and the mean size of the
server's coalesced model calls (from its Prometheus metrics).

Models: the bundled default model (``load_pipeline(None)``), the classical Sauvola segmenter and a
tiny random-weight SAM2 (``runtime.sam2_model.tiny_spec``), or only ``--model PATH``.

    python benchmarks/bench_server.py [--size 1024] [--requests 32] [--clients 1 4 16] [--repeat 3]
                                     [--threads N] [--model PATH]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from samsem.runtime.load import load_pipeline
from samsem.runtime.models.registry import save_model
from samsem.runtime.pipeline import Pipeline
from samsem.server.client import SamsemClient


def sem_like(size: int, seed: int) -> np.ndarray:
    """A (size, size) uint8 image of bright metal lines on a noisy background."""
    rng = np.random.default_rng(seed)
    img = rng.normal(50, 12, (size, size)).astype(np.float32)
    for y in range(int(rng.integers(3, 15)), size - 8, 21):
        x0, x1 = sorted(rng.integers(0, size, 2))
        img[y : y + int(rng.integers(3, 9)), x0:x1] = 200
    for x in range(9, size - 6, 57):
        img[:, x : x + 5] = 190
    return np.clip(img, 0, 255).astype(np.uint8)


def start_server(folder: Path, model: str | None, threads: int | None) -> tuple[subprocess.Popen, str, int]:
    """`samsem serve` on free loopback ports; returns (process, address, metrics port)."""
    ready = folder / "ready"
    ready.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "samsem.cli", "serve", "--port", "0", "--ready-file", str(ready)]
    metrics_port = _free_port()
    cmd += ["--metrics-port", str(metrics_port), "--log-level", "warning"]
    if model is not None:
        cmd += ["--model", model]
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    with open(folder / "server.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
    t0 = time.monotonic()
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() - t0 > 120:
            proc.kill()
            raise SystemExit(f"server did not start:\n{(folder / 'server.log').read_text()}")
        time.sleep(0.05)
    return proc, ready.read_text().strip(), metrics_port


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def batch_stats(metrics_port: int) -> tuple[float, float]:
    """(sum, count) of the server's samsem_batch_size histogram."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    total = float(re.search(r"^samsem_batch_size_sum (\S+)$", text, re.M).group(1))
    count = float(re.search(r"^samsem_batch_size_count (\S+)$", text, re.M).group(1))
    return total, count


def run_clients(address: str, images: list[np.ndarray], clients: int) -> tuple[float, list[float]]:
    """Send ``images`` split over ``clients`` threads; returns (wall seconds, per-request latencies)."""
    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client(mine: list[np.ndarray]) -> None:
        try:
            with SamsemClient(address) as c:
                c.segment(images[0][:256, :256])  # connect and warm up
                barrier.wait()
                for img in mine:
                    t0 = time.perf_counter()
                    c.segment(img)
                    with lock:
                        latencies.append(time.perf_counter() - t0)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=client, args=(images[i::clients],)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return wall, latencies


def direct(pipeline: Pipeline, images: list[np.ndarray], in_thread: bool) -> float:
    """Seconds for ``segment_many`` over the images in this process, in the main thread or in a new one
    (OpenMP-parallel kernels of Torch and Numba can behave differently in the main thread on a busy
    machine, so both are measured)."""
    out: list[float] = []

    def run() -> None:
        list(pipeline.segment_many([("warm", lambda: images[0][:256, :256])]))
        t0 = time.perf_counter()
        for _ in pipeline.segment_many([(str(i), lambda im=im: im) for i, im in enumerate(images)]):
            pass
        out.append(time.perf_counter() - t0)

    if in_thread:
        t = threading.Thread(target=run)
        t.start()
        t.join()
    else:
        run()
    return out[0]


def bench_model(
    label: str,
    model: str | None,
    images: list[np.ndarray],
    levels: list[int],
    repeat: int,
    threads: int | None,
    folder: Path,
) -> None:
    pipeline = load_pipeline(model)
    tiles = sum(pipeline.count_inputs(*im.shape) for im in images)
    main = min(direct(pipeline, images, in_thread=False) for _ in range(repeat))
    worker = min(direct(pipeline, images, in_thread=True) for _ in range(repeat))
    base = min(main, worker)
    n = len(images)
    print(f"\n{label}: {n} images {images[0].shape[0]}x{images[0].shape[1]}, {tiles} model inputs")
    print(f"  {'mode':<25}{'req/s':>8}{'tiles/s':>10}{'vs direct':>11}{'latency s':>11}{'batch':>7}")
    for name, t in (("direct, main thread", main), ("direct, worker thread", worker)):
        print(f"  {name:<25}{n / t:>8.2f}{tiles / t:>10.1f}{base / t:>11.2f}{t / n:>11.3f}")
    proc, address, metrics_port = start_server(folder, model, threads)
    try:
        for clients in levels:
            s0, c0 = batch_stats(metrics_port)
            wall, lat = min(
                (run_clients(address, images, clients) for _ in range(repeat)), key=lambda r: r[0]
            )
            s1, c1 = batch_stats(metrics_port)
            mean_batch = (s1 - s0) / max(c1 - c0, 1)
            name = f"service, {clients} client(s)"
            print(
                f"  {name:<25}{n / wall:>8.2f}{tiles / wall:>10.1f}{base / wall:>11.2f}"
                f"{float(np.mean(lat)):>11.3f}{mean_batch:>7.1f}"
            )
    finally:
        proc.terminate()
        proc.wait(timeout=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024, help="image side (default 1024)")
    ap.add_argument("--requests", type=int, default=32, help="images per concurrency level (default 32)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs (default 3)")
    ap.add_argument("--model", default=None, help="benchmark only this model bundle/checkpoint")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads, here and in the server"
    )
    args = ap.parse_args()
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    images = [sem_like(args.size, seed) for seed in range(args.requests)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        runs: list[tuple[str, str | None]] = [(f"model {args.model}", args.model)]
        if args.model is None:
            from samsem.runtime.models import sam2 as sm

            spec = sm.tiny_spec(128)
            ckpt = folder / "tiny_sam2.pt"
            save_model(ckpt, sm.build(spec, seed=0), spec)
            runs = [
                ("bundled default model (load_pipeline(None))", None),
                ("classical Sauvola", "classical"),
                ("tiny random SAM2 (128-px input, two scales)", str(ckpt)),
            ]
        for label, model in runs:
            bench_model(label, model, images, args.clients, args.repeat, args.threads, folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
