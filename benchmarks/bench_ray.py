"""Throughput of ``samsem segment --ray`` with 1 and 2 workers vs the local command on the same images.

Every run is a fresh ``samsem segment`` process (imports, model load and all), timed from start to
exit, so the Ray runs pay everything Ray adds: the driver's imports and connection, the worker
processes, the dataset, the per-task round trips. The local command is pinned to one core
(``taskset -c 0``, one OpenMP/Numba thread) like a Ray worker with ``--threads-per-worker 1``; the
local command on every core is shown for reference. The Ray instance (``ray.init(num_cpus=2)`` in this
process, as ``ray start --head`` would be) is started once before the Ray runs and timed separately.
Two local commands at once, each pinned to its own core with half the images, show what two
independent processes gain on this machine without Ray (the ceiling for 2 workers).
Every Ray run's masks are checked to be byte-identical to the local command's.

    python benchmarks/bench_ray.py [--images 20] [--size 2048] [--workers 1 2] [--model PATH]
                                   [--data DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

PINNED = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def _make_image(args: tuple[Path, int, int]) -> None:
    from samsem.io import write_image
    from samsem.synth.generate import generate_sample

    path, size, seed = args
    write_image(path, generate_sample("medium", size, size, seed=seed).image)


def make_images(folder: Path, count: int, size: int) -> list[Path]:
    """``count`` synthetic "medium" SEM images of ``size``² px in ``folder`` (kept between runs)."""
    paths = [folder / f"sem{i:03d}.png" for i in range(count)]
    todo = [(p, size, 1000 + i) for i, p in enumerate(paths) if not p.exists()]
    if todo:
        print(f"generating {len(todo)} images of {size}² px in {folder} ...", file=sys.stderr)
        folder.mkdir(parents=True, exist_ok=True)
        with ProcessPoolExecutor(2) as pool:
            list(pool.map(_make_image, todo))
    return paths


def descendants_cpu(skip: int | None = None) -> dict[int, float]:
    """CPU seconds (user + system, own only) of every live descendant of this process, by pid, but for
    ``skip`` and its own descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    parent, cpu = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        parent[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / tick
    me, found = os.getpid(), {}
    for pid, seconds in cpu.items():
        ancestor = parent.get(pid)
        while ancestor not in (None, 0, 1, me, skip):
            ancestor = parent.get(ancestor)
        if ancestor == me and pid != skip:
            found[pid] = seconds
    return found


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of a command; the CPU of every process involved is counted: the
    command's (with its children), and what the other live descendants of this process (the Ray
    instance: GCS, raylet, Ray Data's helper actors, the workers) spent meanwhile, sampled every
    0.2 s (a worker's last 0.2 s before it exits may be missed). Its stderr is shown when it fails."""
    before, reaped = descendants_cpu(), _reaped_cpu()
    seen: dict[int, float] = {}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}
    )
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read() if proc.stderr else ""))
    reader.start()
    names: dict[int, str] = {}
    while proc.poll() is None:
        seen |= descendants_cpu(skip=proc.pid)  # the command's own tree is counted once reaped
        for pid in seen:  # a Ray worker is renamed when it becomes an actor (and when it ends)
            with contextlib.suppress(OSError):
                name = Path(f"/proc/{pid}/cmdline").read_text().split("\0")[0]
                names[pid] = names[pid] if "SegmentWorker" in names.get(pid, "") else name
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    reader.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{''.join(err)[-3000:]}")
    groups: dict[str, float] = {"command": _reaped_cpu() - reaped}
    for pid, cpu in seen.items():
        name = names.get(pid, "?")
        kind = "workers" if "SegmentWorker" in name else "other Ray processes"
        groups[kind] = groups.get(kind, 0.0) + cpu - before.get(pid, 0.0)
    cpu = sum(groups.values())
    split = ", ".join(f"{k} {v:.1f}" for k, v in groups.items() if v >= 0.05)
    print(f"{wall:7.1f} s wall {cpu:7.1f} s CPU ({split})  {' '.join(cmd[-6:])}", file=sys.stderr, flush=True)
    return wall, cpu


def _reaped_cpu() -> float:
    """CPU seconds of the child processes this process has waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def same_masks(a: Path, b: Path) -> bool:
    masks = sorted(p.name for p in a.glob("*.mask.*"))
    return bool(masks) and all((a / m).read_bytes() == (b / m).read_bytes() for m in masks)


def stage_costs(out: Path) -> tuple[int, dict[str, float]]:
    """(model inputs, stage -> seconds summed over images) from the reports in ``out``."""
    inputs, stages = 0, {}
    for path in sorted(out.glob("*.report.json")):
        report = json.loads(path.read_text())
        inputs += report["n_patches"] + (report["mode"] == "two-scale")
        for stage, seconds in report["timings_s"].items():
            stages[stage] = stages.get(stage, 0.0) + seconds
    return inputs, stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20, help="number of images (default 20)")
    parser.add_argument("--size", type=int, default=2048, help="image side in px (default 2048)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray worker counts")
    parser.add_argument("--model", default=None, help="model argument (default: the bundled model)")
    parser.add_argument("--data", type=Path, default=None, help="folder of the generated images (kept)")
    args = parser.parse_args()

    import ray

    data = args.data or Path(tempfile.gettempdir()) / f"samsem-bench-ray-{args.size}"
    images = make_images(data, args.images, args.size)
    work = Path(tempfile.mkdtemp(prefix="samsem-bench-ray-"))
    folder = work / "images"
    folder.mkdir()
    for p in images:
        (folder / p.name).symlink_to(p)
    segment = [sys.executable, "-m", "samsem.cli", "segment", str(folder)]
    if args.model:
        segment += ["--model", args.model]
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    load = os.getloadavg()[0]
    rows: list[tuple[str, float, float]] = []
    try:
        local1, local1_cpu = timed([*pin, *segment, "-o", str(work / "local1")], PINNED)
        rows.append(("local command, 1 thread (pinned)", local1, local1_cpu))
        inputs, stages = stage_costs(work / "local1")
        rows.append(("local command, all cores", *timed([*segment, "-o", str(work / "local")])))
        if pin:  # the machine's own 2-process ceiling: two local commands at once, one core each
            halves = []
            for k in (0, 1):
                half = work / f"half{k}"
                half.mkdir()
                for p in images[k::2]:
                    (half / p.name).symlink_to(p)
                model = ["--model", args.model] if args.model else []
                cmd = [sys.executable, "-m", "samsem.cli", "segment", str(half), "-o", str(work / f"out{k}")]
                halves.append(" ".join(["taskset", "-c", str(k), *cmd, *model]))
            both = ["bash", "-c", f"{halves[0]} & {halves[1]} & wait"]
            rows.append(("2 local commands at once, 1 core each, half the images each", *timed(both, PINNED)))
        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        start = time.perf_counter() - t0
        address = ray.get_runtime_context().gcs_address
        walls = {}
        for w in args.workers:
            out = work / f"ray{w}"
            cmd = [*segment, "-o", str(out), f"--ray={address}", "--workers", str(w)]
            walls[w], cpu = timed([*cmd, "--threads-per-worker", "1"])
            if not same_masks(work / "local1", out):
                raise SystemExit(f"Ray with {w} workers wrote different masks")
            records = [json.loads(line) for line in (out / "run-manifest.jsonl").read_text().splitlines()]
            pids = {r["pid"] for r in records if r.get("event") == "image"}
            rows.append((f"Ray, {w} worker(s) x 1 thread ({len(pids)} processes)", walls[w], cpu))
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    n = len(images)
    print(f"{n} images of {args.size}² px, {os.cpu_count()} CPUs, load average {load:.1f} at the start")
    print(f"Ray instance start (ray.init, like `ray start --head`): {start:.1f} s, not included below")
    print("| run | wall s | images/s | vs local 1 thread | CPU s (all processes) | CPU vs local 1 thread |")
    print("|---|---|---|---|---|---|")
    for name, wall, cpu in rows:
        speed, cost = local1 / wall, cpu / local1_cpu
        print(f"| {name} | {wall:.1f} | {n / wall:.3f} | {speed:.2f}x | {cpu:.1f} | {cost:.2f}x |")
    if 1 in walls:
        print(f"Ray overhead, 1 worker vs the local command on one thread: {walls[1] / local1 - 1:+.1%} wall")
        for w in (w for w in walls if w != 1):
            print(f"speed-up, {w} workers vs 1: {walls[1] / walls[w]:.2f}x")
    print("masks: byte-identical to the local command in every Ray run")
    costs = ", ".join(f"{k} {1e3 * v / inputs:.1f}" for k, v in stages.items())
    rest = 1e3 * (local1 - sum(stages.values())) / inputs
    print(f"local command, 1 thread, ms per model input ({inputs} inputs): {costs}; the rest {rest:.1f}")
    print("  (the rest: process start-up, imports, model load, mask writes)")


if __name__ == "__main__":
    main()
