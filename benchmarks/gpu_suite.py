"""The GPU suite: every engine of every model and the whole pipeline, in one command and a hard time budget.

    python benchmarks/gpu_suite.py --out DIR [--budget-s 480] [--peak-tflops 790]   # on the GPU machine
    python benchmarks/gpu_suite.py --out DIR --tiny --device cpu                     # CPU smoke run (tests)

What it measures, in this order (each step is skipped, with the reason in the tables, when its estimated
time would overrun the budget; estimates of compile times are corrected by the ones measured):

1. the machine: GPU, torch, free memory, and its two ceilings measured (bf16 matrix product rate on
   random data, device-to-device copy bandwidth);
2. per model (SAM2 hiera-t and hiera-l at 1024 px with random weights, the lite model with the bundled
   weights when present) and engine (eager fp32/bf16/fp16, ``torch.compile``, CUDA graphs,
   compile + CUDA graphs, AOTInductor fp16) and batch (32, 8, 1 by default): ms per input, inputs/s,
   peak memory, the mask IoU against eager fp32 on the same inputs, FLOPs per input
   (``torch.utils.flop_counter``, multiply-add = 2) and the ratio to the FLOP floor at ``--peak-tflops``
   (default 790: the bf16 rate measured on this workplace's H200; H100 SXM datasheet: 989);
3. the whole pipeline on an ``--image``-px SEM-like image (default 8192: 325 model inputs) with SAM2
   hiera-t and hiera-l on the device-resident stages and on the host stages: seconds per image, the
   engine alone on the same number of inputs, their ratio, and the GPU busy fraction (NVML utilisation
   sampled every 20 ms when pynvml is there, else the engine-alone time over the pipeline time).

Timing: CUDA events around each call after warm-up calls (compilation, graph capture), median of
``--repeat`` calls, inputs alternating between two random sets. Tables (Markdown and JSON) are rewritten
after every measurement, so a run stopped early keeps what it measured; a watchdog ends the process 45 s
after the budget if a step overruns its estimate by that much. ``--tiny`` swaps in tiny models
and sizes so that the whole script runs on a CPU in seconds (the test of this file).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from bench_overhead import sem_like

from samsem.runtime.backends.pytorch import TorchBackend
from samsem.runtime.config import PipelineConfig
from samsem.runtime.models import lite as lm
from samsem.runtime.models import sam2 as sm
from samsem.runtime.pipeline import Pipeline
from samsem.runtime.stages.tiling import TilingConfig

ENGINES = (
    "eager-fp32",
    "eager-bf16",
    "eager-fp16",
    "cudagraphs-bf16",
    "compile-bf16",
    "compile-cudagraphs-bf16",
    "aoti-fp16",
)
# first guesses of one-off build seconds (compile, capture, AOT package) per model size class
BUILD_GUESS = {"compile": 90.0, "compile-cudagraphs": 100.0, "cudagraphs": 10.0, "aoti": 200.0, "eager": 2.0}


# ------------------------------------------------------------------------------------------ bookkeeping


class Budget:
    """Seconds left of the run's budget; ``fits(estimate)`` says whether a step may start."""

    def __init__(self, seconds: float) -> None:
        self.start = time.perf_counter()
        self.seconds = seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def fits(self, estimate: float) -> bool:
        return estimate <= self.left()


class Tables:
    """Rows of each section, written as results.json and results.md (atomically) after every change."""

    def __init__(self, out: Path, meta: dict[str, Any]) -> None:
        self.out = out
        self.meta = meta
        self.sections: dict[str, list[dict[str, Any]]] = {"ceilings": [], "engines": [], "pipeline": []}
        self.notes: list[str] = []

    def add(self, section: str, row: dict[str, Any]) -> None:
        self.sections[section].append(row)
        self.write()

    def note(self, text: str) -> None:
        print(f"# {text}", flush=True)
        self.notes.append(text)
        self.write()

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        data = {"meta": self.meta, **self.sections, "notes": self.notes}
        _atomic(self.out / "results.json", json.dumps(data, indent=1, default=str))
        _atomic(self.out / "results.md", self.markdown())

    def markdown(self) -> str:
        lines = ["# GPU suite results", ""]
        lines += [f"- {k}: {v}" for k, v in self.meta.items()]
        for name, rows in self.sections.items():
            if not rows:
                continue
            cols = list(dict.fromkeys(k for r in rows for k in r))
            lines += ["", f"## {name}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
        if self.notes:
            lines += ["", "## notes", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "/")


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------ timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[int], Any], device: torch.device, repeat: int) -> list[float]:
    """Seconds of ``repeat`` calls ``fn(i)`` (CUDA events on a GPU, the host clock on a CPU)."""
    times = []
    for i in range(repeat):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(i)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn(i)
            times.append(time.perf_counter() - t0)
    return times


def ceilings(device: torch.device, tables: Tables, tiny: bool) -> None:
    """The device's measured bf16 matrix rate and copy bandwidth (the floors' denominators)."""
    if device.type != "cuda":
        tables.note("ceilings: not measured on a CPU")
        return
    n = 2048 if tiny else 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    t = statistics.median(time_calls(lambda i: a @ b, device, 10))
    tables.add(
        "ceilings", {"what": f"bf16 matmul {n}^3, random", "value": 2 * n**3 / t / 1e12, "unit": "TFLOP/s"}
    )
    x = torch.empty(1 << 30, dtype=torch.uint8, device=device)  # 1 GiB
    y = torch.empty_like(x)
    y.copy_(x)
    t = statistics.median(time_calls(lambda i: y.copy_(x), device, 10))
    tables.add(
        "ceilings",
        {
            "what": "device-to-device copy 1 GiB",
            "value": 2 * x.numel() / t / 1e12,
            "unit": "TB/s (read+write)",
        },
    )


# ------------------------------------------------------------------------------------------ models


@dataclass
class ModelCase:
    """A model to benchmark: its module (io-spec "model" forward), io-spec and input side."""

    name: str
    module: torch.nn.Module
    size: int
    points: int  # point prompts per input (0: the model takes none)
    weights: str

    @property
    def spec(self) -> Any:
        return self.module.engines()["model"]  # type: ignore[operator]


def build_models(names: list[str], tiny: bool) -> dict[str, Callable[[], ModelCase]]:
    """Name -> builder (lazy: a model is built only when its turn comes)."""

    def sam(config: str) -> Callable[[], ModelCase]:
        def make() -> ModelCase:
            spec = sm.tiny_spec(128) if tiny else sm.SAM2Spec(config=config, image_size=1024)
            return ModelCase(
                config, sm.SAM2ImageModel(sm.build(spec, seed=0)).eval(), spec.image_size, 5, "random"
            )

        return make

    def lite() -> ModelCase:
        from samsem.runtime.load import default_bundle
        from samsem.runtime.models.registry import load_model

        bundle = default_bundle()
        weights = None if bundle is None or tiny else bundle / "model1" / "weights.pt"
        if weights is not None and weights.is_file():
            loaded = load_model(weights)
            return ModelCase(
                "lite", loaded.module.eval(), loaded.family.input_size(loaded.spec), 0, "bundled"
            )
        spec = lm.tiny_lite_spec(64) if tiny else lm.LiteSpec(input_size=512)
        return ModelCase("lite", lm.LiteNet(spec).eval(), spec.input_size, 0, "random")

    known = {"hiera_t": sam("sam2.1_hiera_t"), "hiera_l": sam("sam2.1_hiera_l"), "lite": lite}
    return {n: known[n] for n in names}


def make_inputs(case: ModelCase, batch: int, device: torch.device, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    if case.points == 0:
        return {"image": torch.rand(batch, 1, case.size, case.size, generator=gen).to(device)}
    return {
        "image": torch.randn(batch, 3, case.size, case.size, generator=gen).to(device),
        "point_coords": (torch.rand(batch, case.points, 2, generator=gen) * case.size).to(device),
        "point_labels": torch.ones(batch, case.points).to(device),
    }


def masks_of(out: dict[str, torch.Tensor]) -> torch.Tensor:
    """Binary masks of a model's outputs: SAM2's best-scoring mask or the lite logits, > 0."""
    if "masks" in out:
        best = out["iou_scores"].argmax(dim=1)
        return out["masks"][torch.arange(len(best)), best] > 0
    return out["logits"][:, 0] > 0


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def flops_per_input(case: ModelCase, device: torch.device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    inputs = make_inputs(case, 1, device, 0)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        case.module(*[inputs[n] for n in case.spec.input_names])
    return float(counter.get_total_flops())


def make_engine(engine: str, case: ModelCase, device: torch.device, max_batch: int, tmp: Path) -> Any:
    """The backend of an engine name ("eager-bf16", "compile-bf16", "aoti-fp16", ...)."""
    kind, precision = engine.rsplit("-", 1)
    if device.type != "cuda" and precision == "fp16":
        precision = "fp32" if kind == "aoti" else precision
    if kind == "aoti":
        from samsem.export.aoti import compile_aoti
        from samsem.runtime.backends.aoti import AotiBackend
        from samsem.runtime.bundle.manifest import Limits

        path = tmp / f"{case.name}.pt2"
        limits = Limits(batch=(1, max_batch, max_batch), points=(1, 5, 5))
        compile_aoti(
            case.module, case.spec, path, limits=limits, device=str(device), fp16=precision == "fp16"
        )
        return AotiBackend(path, case.spec, str(device))
    return TorchBackend(case.module, str(device), precision, kind)


def engine_rows(
    case: ModelCase,
    engines: list[str],
    batches: list[int],
    device: torch.device,
    args: Any,
    tables: Tables,
    budget: Budget,
    learned: dict[str, float],
) -> None:
    """Benchmark every engine x batch of one model."""
    flops = flops_per_input(case, device)
    floor_ms = flops / (args.peak_tflops * 1e12) * 1e3
    reference: dict[int, torch.Tensor] = {}
    per_call_guess = 0.05 if args.tiny else 0.02
    with tempfile.TemporaryDirectory() as tmp:
        for engine in engines:
            kind, precision = engine.rsplit("-", 1)
            cuda_only = kind in ("cudagraphs", "compile-cudagraphs") or (
                precision == "fp16" and kind != "aoti"
            )
            base = {"model": case.name, "engine": engine}
            if cuda_only and device.type != "cuda":
                tables.add("engines", {**base, "skipped": "needs CUDA"})
                continue
            build = learned.get(
                f"{kind}:{case.name}", BUILD_GUESS.get(kind, 30.0) * (0.05 if args.tiny else 1.0)
            )
            if not budget.fits(build + 5):
                tables.add(
                    "engines",
                    {**base, "skipped": f"build ~{build:.0f} s would not fit ({budget.left():.0f} s left)"},
                )
                continue
            t0 = time.perf_counter()
            try:
                backend = make_engine(engine, case, device, max(batches), Path(tmp))
            except Exception as exc:  # report and go on: one engine failing must not stop the suite
                tables.add("engines", {**base, "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
                traceback.print_exc()
                continue
            build_s = time.perf_counter() - t0
            for batch in batches:
                row = {**base, "batch": batch}
                est = (
                    build if kind in ("compile", "compile-cudagraphs", "cudagraphs") else 0
                ) + per_call_guess * batch * (args.repeat + 3)
                if not budget.fits(est):
                    tables.add(
                        "engines",
                        {**row, "skipped": f"~{est:.0f} s would not fit ({budget.left():.0f} s left)"},
                    )
                    continue
                try:
                    row.update(measure(backend, case, batch, device, args.repeat, reference))
                except Exception as exc:
                    row["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
                    traceback.print_exc()
                    tables.add("engines", row)
                    continue
                first = row.pop("first_call_s")
                learned[f"{kind}:{case.name}"] = max(learned.get(f"{kind}:{case.name}", 0.0), first)
                row.update(
                    {
                        "build_s": round(build_s + first, 2),
                        "gflop_per_input": flops / 1e9,
                        "floor_ms": floor_ms,
                        "x_floor": row["ms_per_input"] / floor_ms,
                    }
                )
                tables.add("engines", row)
            del backend
            if device.type == "cuda":
                torch.cuda.empty_cache()


def measure(
    backend: Any,
    case: ModelCase,
    batch: int,
    device: torch.device,
    repeat: int,
    reference: dict[int, torch.Tensor],
) -> dict[str, Any]:
    sets = [make_inputs(case, batch, device, seed) for seed in (1, 2)]
    t0 = time.perf_counter()
    out = backend.run_tensors(sets[0])
    sync(device)
    first = time.perf_counter() - t0
    backend.run_tensors(sets[1])
    backend.run_tensors(sets[0])
    masks = masks_of(out)
    if batch not in reference:  # the first engine (eager fp32) is the reference
        reference[batch] = masks
    if device.type == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = time_calls(lambda i: backend.run_tensors(sets[i % 2]), device, repeat)
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == "cuda" else None
    ms = 1e3 * statistics.median(times) / batch
    return {
        "ms_per_input": ms,
        "inputs_per_s": 1e3 / ms,
        "peak_mib": peak,
        "iou_vs_fp32": iou(masks, reference[batch]),
        "first_call_s": first,
    }


# ------------------------------------------------------------------------------------------ pipeline


class UtilSampler:
    """Mean GPU utilisation (NVML, percent of time a kernel ran) sampled every 20 ms while active."""

    def __init__(self, device: torch.device) -> None:
        self.samples: list[int] = []
        self.handle = None
        if device.type == "cuda":
            try:
                import pynvml

                pynvml.nvmlInit()
                self.nvml = pynvml
                self.handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
            except Exception:  # no NVML: the busy fraction falls back to engine time / pipeline time
                self.handle = None

    def __enter__(self) -> UtilSampler:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()

    def _run(self) -> None:
        while self.handle is not None and not self.stop.wait(0.02):
            self.samples.append(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)

    def mean(self) -> float | None:
        return statistics.fmean(self.samples) / 100 if self.samples else None


def pipeline_rows(
    case: ModelCase, engine: str, device: torch.device, args: Any, tables: Tables, budget: Budget
) -> None:
    from samsem.runtime.models.registry import get_family

    backend = make_engine(engine, case, device, args.pipeline_batch, Path(tempfile.gettempdir()))
    family = get_family("lite" if case.points == 0 else "sam2")
    seg = family.segmenter(backend, case.size)
    cfg = PipelineConfig(batch_size=args.pipeline_batch)
    if args.tiny:
        cfg = replace(cfg, tiling=TilingConfig(patch_size=64))
    image = sem_like(args.image, seed=0)
    n_inputs = Pipeline(seg, seg, cfg, device=str(device)).count_inputs(*image.shape)
    # the engine alone on as many inputs, same batch size, inputs already on the device
    inputs = torch.rand(args.pipeline_batch, case.size, case.size, device=device)
    points = (
        (torch.rand(args.pipeline_batch, max(case.points, 1), 2, device=device) * case.size)
        if case.points
        else None
    )
    seg.predict_tensors(inputs, points)
    sync(device)
    t0 = time.perf_counter()
    for k in range(0, n_inputs, args.pipeline_batch):
        b = min(args.pipeline_batch, n_inputs - k)
        seg.predict_tensors(inputs[:b], None if points is None else points[:b])
    sync(device)
    engine_s = time.perf_counter() - t0
    stage_sets = [("device", str(device)), ("host", "host")]
    for where, dev in stage_sets:
        row = {
            "model": case.name,
            "engine": engine,
            "stages": where,
            "image": f"{args.image}^2",
            "inputs": n_inputs,
        }
        if not budget.fits(4 * engine_s + 10):
            tables.add("pipeline", {**row, "skipped": f"would not fit ({budget.left():.0f} s left)"})
            continue
        pipe = Pipeline(seg, seg, cfg, device=dev, workers=args.workers)
        pipe.segment(sem_like(600, seed=1))  # warm-up: JIT kernels, lazy imports
        walls = []
        with UtilSampler(device) as util:
            for _ in range(2):
                sync(device)
                t0 = time.perf_counter()
                res = pipe.segment(image)
                sync(device)
                walls.append(time.perf_counter() - t0)
        wall = min(walls)
        busy = util.mean()
        tables.add(
            "pipeline",
            {
                **row,
                "s_per_image": wall,
                "engine_alone_s": engine_s,
                "pipeline_over_engine": wall / engine_s,
                "gpu_busy": busy if busy is not None else engine_s / wall,
                "busy_from": "nvml" if busy is not None else "engine/pipeline",
                "ms_per_input": 1e3 * wall / n_inputs,
                "foreground": float(res.mask.mean()),
                "timings_s": {k: round(v, 3) for k, v in res.report.timings_s.items()},
            },
        )


# ------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for results.md / results.json")
    ap.add_argument("--budget-s", type=float, default=480.0, help="hard time budget (default 8 minutes)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", default="lite,hiera_t,hiera_l")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--batches", default="32,8,1", help="batch sizes, most important first")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument(
        "--peak-tflops", type=float, default=790.0, help="peak rate of the FLOP floor (bf16 dense)"
    )
    ap.add_argument("--image", type=int, default=8192, help="side of the pipeline's test image")
    ap.add_argument("--pipeline-models", default="hiera_t,hiera_l")
    ap.add_argument("--pipeline-engine", default="eager-bf16")
    ap.add_argument("--pipeline-batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None, help="host stage threads (default: all cores)")
    ap.add_argument("--tiny", action="store_true", help="tiny models and sizes (CPU smoke run)")
    args = ap.parse_args(argv)
    if args.tiny:
        args.image = min(args.image, 512)
        args.pipeline_batch = min(args.pipeline_batch, 8)
    if args.device == "cpu":
        torch.set_num_threads(1)  # small CPU ops: one thread, no OpenMP hand-offs on a shared machine
    device = torch.device(args.device)
    budget = Budget(args.budget_s)
    meta = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_cores": os.cpu_count(),
        "budget_s": args.budget_s,
        "peak_tflops": args.peak_tflops,
        "tiny": args.tiny,
    }
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        meta["gpu_memory_gib"] = f"{free / 2**30:.1f} free of {total / 2**30:.1f}"
    tables = Tables(args.out, meta)
    watchdog = threading.Timer(args.budget_s + 45.0, _hard_stop, args=(tables, budget))
    watchdog.daemon = True
    watchdog.start()
    torch.backends.cuda.matmul.allow_tf32 = True  # fp32 eager as users run it on Ampere+ (TF32 matmuls)
    torch.backends.cudnn.allow_tf32 = True
    ceilings(device, tables, args.tiny)
    models = [m for m in args.models.split(",") if m]
    engines = args.engines.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    learned: dict[str, float] = {}
    cases: dict[str, ModelCase] = {}
    # pipelines first for the first pipeline model (the headline figure), then engines, then the rest
    pipeline_models = [m for m in args.pipeline_models.split(",") if m]
    order: list[tuple[str, str]] = []
    if pipeline_models:
        order.append(("pipeline", pipeline_models[0]))
    order += [("engines", m) for m in models]
    order += [("pipeline", m) for m in pipeline_models[1:]]
    builders = build_models(sorted(set(models) | set(pipeline_models)), args.tiny)
    for what, name in order:
        if not budget.fits(15):
            tables.note(f"{what} {name}: skipped, budget spent")
            continue
        try:
            if name not in cases:
                cases[name] = builders[name]()
                cases[name].module.to(device)
            case = cases[name]
            if what == "engines":
                engine_rows(case, engines, batches, device, args, tables, budget, learned)
            else:
                pipeline_rows(case, args.pipeline_engine, device, args, tables, budget)
        except Exception as exc:  # keep going: the tables say what failed
            tables.note(f"{what} {name} failed: {type(exc).__name__}: {str(exc)[:300]}")
            traceback.print_exc()
    watchdog.cancel()
    tables.note(f"finished in {budget.elapsed():.0f} s of {args.budget_s:.0f} s")
    print(tables.markdown())
    return 0


def _hard_stop(tables: Tables, budget: Budget) -> None:
    """A step overran the budget by far: keep the tables and end the process (exit status 3)."""
    tables.note(f"stopped by the watchdog after {budget.elapsed():.0f} s (a step overran its estimate)")
    print(tables.markdown(), flush=True)
    os._exit(3)


if __name__ == "__main__":
    sys.exit(main())
