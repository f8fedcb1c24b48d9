"""``samsem segment --ray``: the segment loop of :mod:`samsem.runtime.cli` on a Ray cluster (Ray Data).

The one module that imports ``ray`` and ``pyarrow`` (inside functions, so importing it stays light).

* **Inputs** are listed on the driver: local files, folders and globs with :func:`samsem.io.list_images`
  (as the local command does), URIs with ``pyarrow.fs`` (``s3://…``, ``gs://…``, ``hdfs://…``,
  ``file:///…``: a file, a folder or a glob such as ``s3://bucket/chip7/*.tif``). Only names are listed;
  no image is opened by the driver. They become a Ray Data dataset of one ``input`` column in at most
  :data:`BLOCKS_PER_WORKER` blocks per worker (a block is one Ray task; fewer, larger blocks keep a
  million-image run's bookkeeping small, more keep the tail short).
* **Workers** are Ray Data actors (:class:`SegmentWorker`, ``ActorPoolStrategy``), each reserving
  ``gpus_per_worker`` GPUs (fractions allowed; 0 = a CPU worker) and ``threads_per_worker`` CPUs. A worker
  pins itself to that many free cores of its node (:func:`pin_threads`), loads the pipeline once with
  :func:`~samsem.runtime.load.load_pipeline` and keeps it; per batch of inputs it plans, skips finished
  images, segments (batching model inputs across the batch) and writes the outputs itself with
  :func:`~samsem.runtime.outputs.write_outputs`: the same names, formats and atomic writes as the
  local command. A remote input is copied to the worker's local disk for the time of its segmentation
  and read with the same :mod:`samsem.io` readers. A per-image error is caught and returned; it never
  stops the run.
* **Faults**: Ray Data restarts a dead worker process (``max_restarts=-1``) and retries its task
  (``max_task_retries=-1``). Outputs are atomic and the report is written last, so a retried task skips
  the images its dead predecessor finished and redoes the rest; temporary files of killed writers
  (:func:`samsem.io.partial_files`) are removed when a run starts and when it ends. A driver stopped
  with Ctrl-C leaves whole files only; the rerun resumes.
* **The run manifest** ``OUT/run-manifest.jsonl`` (JSON lines, appended by the driver as results
  arrive, one flush per line): a ``start`` record (inputs, layout, job), one ``image`` record per input
  (status ``done``, ``skipped``, ``completed`` (missing previews or vector files written from the
  existing mask) or ``failed`` with the error, seconds, node and worker pid) and an
  ``end`` record with the counts and the outcome (``finished``, ``interrupted`` or ``failed``).
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from samsem.errors import ConfigError, InputError, SamsemError

if TYPE_CHECKING:
    from samsem.runtime.config import RunOptions
    from samsem.runtime.outputs import ImageOutputs, RunSummary
    from samsem.runtime.pipeline import Pipeline, SegmentResult
    from samsem.vector import VectorOptions

MANIFEST = "run-manifest.jsonl"
BLOCKS_PER_WORKER = 32  # Ray tasks per worker at most; a task reports its images when it ends
WORKER_START_S = 900  # longest wait for the workers to start and load the model before a run fails
_GLOB_CHARS = "*?["
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")
_CORE_LOCKS: list[IO[str]] = []  # flock-ed core files held for the life of a worker process


def is_uri(name: str) -> bool:
    """True for ``scheme://…`` names (read with pyarrow.fs), False for local paths."""
    return "://" in name


# ------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class SegmentJob:
    """What every worker needs: the model flags, the run options and the output settings.

    options: :class:`~samsem.runtime.config.RunOptions` as a dict, so that a worker unpickles the job
    without importing the runtime (whose thread pools must start after :func:`pin_threads`).
    """

    out_dir: str
    model: str | None = None
    backend: str = "auto"
    device: str = "cpu"
    precision: str = "fp32"
    options: Mapping[str, Any] = field(default_factory=dict)
    preview: bool = False
    overwrite: bool = False
    vector: VectorOptions | None = None

    @classmethod
    def create(
        cls,
        out_dir: str | Path,
        options: RunOptions,
        *,
        model: str | None = None,
        backend: str = "auto",
        device: str = "cpu",
        precision: str = "fp32",
        preview: bool = False,
        overwrite: bool = False,
        vector: VectorOptions | None = None,
    ) -> SegmentJob:
        """A job from typed run options (validated by RunOptions); ``vector``: the vector files to write
        (as ``samsem segment --vector``), None for none."""
        options_dict = asdict(options)
        return cls(str(out_dir), model, backend, device, precision, options_dict, preview, overwrite, vector)


@dataclass(frozen=True)
class ClusterOptions:
    """How the run uses the cluster.

    address: ``ray.init`` address (None: Ray's discovery: RAY_ADDRESS, the latest ``ray start`` cluster
    of this host, else a new local instance; "auto": an existing cluster only; "local": a new local
    instance; "HOST:PORT" or "ray://HOST:PORT"). Ignored when this process is already connected.
    workers: actors (None: every GPU / ``gpus_per_worker``, or every CPU / ``threads_per_worker``).
    gpus_per_worker: GPUs per actor, fractions allowed (None: 1 with a CUDA device, else 0).
    threads_per_worker: CPUs each actor reserves and pins (None: 1 for CPU workers; for GPU workers the
    CPUs of the smallest GPU node shared among its workers). images_per_call: images segmented in one
    pipeline call (model inputs are batched across them, which fills a GPU's batches with small images).
    """

    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float | None = None
    threads_per_worker: int | None = None
    images_per_call: int = 1

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {self.workers}")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise ConfigError(f"--gpus-per-worker must be >= 0, got {self.gpus_per_worker}")
        if self.threads_per_worker is not None and self.threads_per_worker < 1:
            raise ConfigError(f"--threads-per-worker must be >= 1, got {self.threads_per_worker}")
        if self.images_per_call < 1:
            raise ConfigError(f"--images-per-call must be >= 1, got {self.images_per_call}")


@dataclass(frozen=True)
class Layout:
    """The actors of a run: how many, and the GPUs and CPU threads each reserves."""

    workers: int
    gpus: float
    threads: int

    def describe(self) -> str:
        gpu = f", {self.gpus:g} GPU" if self.gpus else ""
        return f"{self.workers} worker(s) of {self.threads} thread(s){gpu}"


def plan_layout(
    nodes: Sequence[Mapping[str, float]], device: str, options: ClusterOptions, calls: int
) -> Layout:
    """The actor layout for a cluster of ``nodes`` (each node's total resources, keys "CPU", "GPU").

    An actor must fit on one node; ``options.workers`` beyond what the nodes hold is a ConfigError
    (Ray would wait for resources forever). Never more actors than pipeline ``calls``.
    """
    cuda = device.startswith("cuda")
    if cuda and device != "cuda":
        raise ConfigError(f"with --ray use --device cuda (Ray gives each worker its own GPU), not {device}")
    gpus = options.gpus_per_worker if options.gpus_per_worker is not None else (1.0 if cuda else 0.0)
    if gpus and not cuda:
        raise ConfigError("--gpus-per-worker needs --device cuda")
    if cuda and not gpus:
        raise ConfigError("--device cuda needs --gpus-per-worker > 0")
    threads = options.threads_per_worker
    if threads is None:
        threads = 1
        if gpus:  # share each GPU node's CPUs among its GPU workers (the smallest node decides)
            per_node = [
                int(n.get("CPU", 0) // (n.get("GPU", 0) // gpus or 1))
                for n in nodes
                if n.get("GPU", 0) >= gpus
            ]
            threads = max(1, min(per_node, default=1))
    capacity = 0
    for n in nodes:
        fit = int(n.get("CPU", 0) // threads)
        if gpus:
            fit = min(fit, int(n.get("GPU", 0) // gpus + 1e-9))
        capacity += fit
    if capacity == 0:
        what = f"{gpus:g} GPU and {threads} CPUs" if gpus else f"{threads} CPUs"
        raise ConfigError(f"no node of the Ray cluster has {what} free for one worker")
    workers = options.workers or capacity
    if workers > capacity:
        raise ConfigError(f"--workers {workers}: the Ray cluster holds at most {capacity} such workers")
    return Layout(max(1, min(workers, calls)), gpus, threads)


# -------------------------------------------------------------------------------------------- listing


def list_inputs(inputs: Sequence[str]) -> list[str]:
    """Expand local files/folders/globs (:func:`samsem.io.list_images`, same order and rules) and URIs
    (:func:`list_uri`) into input names; duplicates keep their first position. InputError when an input
    matches nothing."""
    from samsem.io import list_images

    local = [i for i in inputs if not is_uri(i)]
    names = [str(p) for p in list_images(local)] if local else []
    for uri in (i for i in inputs if is_uri(i)):
        names.extend(list_uri(uri))
    return list(dict.fromkeys(names))


def list_uri(uri: str) -> list[str]:
    """Image files named by a URI: a file, a folder (its files, not below) or a glob (``*`` ``?`` ``[…]``;
    ``**`` or a ``/`` after the first wildcard searches below). Sorted; only supported suffixes from
    folders and globs."""
    from pyarrow import fs as pafs

    from samsem.io import SUPPORTED_SUFFIXES

    scheme, _, rest = uri.partition("://")
    wild = min((i for i in (rest.find(c) for c in _GLOB_CHARS) if i >= 0), default=-1)
    base = rest if wild < 0 else rest[: max(rest.rfind("/", 0, wild), 0)]
    try:
        filesystem, base_path = pafs.FileSystem.from_uri(f"{scheme}://{base}")
        base_info = filesystem.get_file_info(base_path)
        if wild < 0 and base_info.type == pafs.FileType.File:
            if PurePosixPath(base_path).suffix.lower() not in SUPPORTED_SUFFIXES:
                raise InputError(None, f"{uri}: unsupported file type", ", ".join(SUPPORTED_SUFFIXES))
            return [uri]
        if base_info.type != pafs.FileType.Directory:
            raise InputError(None, f"{uri}: not found")
        pattern = rest[len(base) :].lstrip("/") if wild >= 0 else None
        deep = pattern is not None and ("**" in pattern or "/" in pattern)
        infos = filesystem.get_file_info(pafs.FileSelector(base_path, recursive=deep))
    except (OSError, ValueError) as exc:  # pyarrow: unknown scheme, no access, bad URI (ArrowInvalid)
        raise InputError(None, f"{uri}: cannot list ({exc})") from None
    prefix = f"{scheme}://{base}".rstrip("/")
    root = base_path.rstrip("/")
    found = []
    for info in infos:
        rel = info.path[len(root) :].lstrip("/")
        if info.type != pafs.FileType.File or PurePosixPath(rel).suffix.lower() not in SUPPORTED_SUFFIXES:
            continue
        if pattern is None or fnmatch.fnmatchcase(rel, pattern):
            found.append(f"{prefix}/{rel}")
    if not found:
        what = "pattern matches no images" if wild >= 0 else "directory contains no images"
        raise InputError(None, f"{uri}: {what}", ", ".join(SUPPORTED_SUFFIXES))
    return sorted(found)


# --------------------------------------------------------------------------------------------- worker


@dataclass(frozen=True)
class ImageRecord:
    """The outcome of one input: status ("done", "skipped", "completed" or "failed"), the error of a
    failure, the seconds the worker spent on it, and which worker (Ray node id, process id)."""

    input: str
    status: str
    error: str = ""
    seconds: float = 0.0
    node: str = ""
    pid: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"event": "image", **asdict(self), "seconds": round(self.seconds, 3)}


def pin_threads(threads: int) -> tuple[int, ...]:
    """Limit this process to ``threads`` CPU threads; call before the runtime is imported.

    Sets the OpenMP/MKL/OpenBLAS/Numba thread counts and, where the OS allows, pins the process to
    ``threads`` cores of this node that no other samsem worker holds (ONNX Runtime, Numba and OpenCV
    size their pools from the affinity). A core is held by an exclusive lock on a file in the temp
    folder, released when the process ends or is killed. Returns the cores pinned to (all allowed cores
    when fewer than ``threads`` are free: then only the thread counts apply).
    """
    import fcntl

    for var in _THREAD_VARS:
        os.environ[var] = str(threads)
    if not hasattr(os, "sched_setaffinity"):
        return ()
    allowed = sorted(os.sched_getaffinity(0))
    folder = Path(tempfile.gettempdir()) / "samsem-cores"
    folder.mkdir(exist_ok=True)
    claimed: list[tuple[int, IO[str]]] = []
    for core in allowed:
        handle = open(folder / f"cpu{core}.lock", "w")  # noqa: SIM115 (held open while pinned)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        claimed.append((core, handle))
        if len(claimed) == threads:
            break
    if len(claimed) < threads:
        for _, held in claimed:
            held.close()
        return tuple(allowed)
    _CORE_LOCKS.extend(held for _, held in claimed)
    cores = tuple(core for core, _ in claimed)
    os.sched_setaffinity(0, cores)
    return cores


@contextlib.contextmanager
def local_copy(uri: str) -> Iterator[Path]:
    """A local copy of a remote file under its own name in a temporary folder, removed afterwards."""
    from pyarrow import fs as pafs

    with tempfile.TemporaryDirectory(prefix="samsem-input-") as tmp:
        try:
            filesystem, path = pafs.FileSystem.from_uri(uri)
            dst = Path(tmp) / PurePosixPath(path).name
            with filesystem.open_input_stream(path) as src, open(dst, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 23)
        except (OSError, ValueError) as exc:  # pyarrow: missing, no access, bad URI (ArrowInvalid)
            raise InputError(None, f"{uri}: cannot read ({exc})") from None
        yield dst


def _message(name: str, exc: Exception) -> str:
    """The user-facing error of an input; a remote input's errors name the URI, not its local copy."""
    if isinstance(exc, InputError) and exc.path is not None and is_uri(name):
        return str(InputError(None, f"{name}: {exc.reason}", exc.expected))
    return str(exc) if isinstance(exc, SamsemError) else f"{type(exc).__name__}: {exc}"


def _results(
    pipeline: Pipeline, todo: Mapping[str, ImageOutputs]
) -> Iterator[tuple[str, SegmentResult | Exception]]:
    """Segment ``todo`` (name -> outputs; batched across images) and yield (name, result or error).

    An exception that escapes the pipeline mid-batch (an engine failure) does not fail the batch's
    other images: the ones not yet yielded are redone one at a time.
    """
    from samsem.io import read_image
    from samsem.runtime.pipeline import FailedImage

    left = list(todo)
    sources = [(name, (lambda p=todo[name].input: read_image(p))) for name in left]
    try:
        for result in pipeline.segment_many(sources):
            left.remove(result.name)
            yield result.name, (result.error if isinstance(result, FailedImage) else result)
    except Exception as exc:
        if len(todo) == 1:
            yield left[0], exc
        else:
            for name in list(left):
                yield from _results(pipeline, {name: todo[name]})


def segment_inputs(
    pipeline: Pipeline, job: SegmentJob, inputs: Sequence[str], protect: Sequence[Path] = ()
) -> list[ImageRecord]:
    """What a worker does with a batch of inputs: plan, skip finished, segment, write; one record per
    input in input order. Writes exactly what ``samsem segment`` writes for these inputs.

    protect: files never to overwrite besides the inputs themselves (the run's inputs in ``out_dir``).
    """
    from samsem.runtime.outputs import complete_outputs, plan_image, write_outputs

    out_dir = Path(job.out_dir)
    records: dict[str, ImageRecord] = {}
    todo: dict[str, ImageOutputs] = {}
    t0 = time.perf_counter()
    with contextlib.ExitStack() as copies:  # remote inputs' local copies live until the task ends
        for name in inputs:
            try:
                local = copies.enter_context(local_copy(name)) if is_uri(name) else Path(name)
                formats = job.vector.formats if job.vector is not None else ()
                outputs, _, _ = plan_image(local, out_dir, preview=job.preview, vector=formats)
            except SamsemError as exc:
                records[name] = ImageRecord(name, "failed", _message(name, exc))
                continue
            if is_uri(name):
                outputs = replace(outputs, source=name)
            if not job.overwrite and outputs.finished():
                records[name] = ImageRecord(name, "skipped")
            elif not job.overwrite and outputs.completable():  # missing previews/vectors from the mask
                try:
                    complete_outputs(outputs, vector_options=job.vector)
                    records[name] = ImageRecord(name, "completed", seconds=time.perf_counter() - t0)
                except Exception as exc:
                    records[name] = ImageRecord(name, "failed", _message(name, exc))
            else:
                todo[name] = outputs
        for name, result in _results(pipeline, todo):
            try:
                if isinstance(result, Exception):
                    raise result
                outputs = todo[name]
                keep = (*protect, outputs.input)
                report = result.report.to_json()
                write_outputs(
                    outputs, result.mask, report, image=result.image, protect=keep, vector_options=job.vector
                )
                records[name] = ImageRecord(name, "done", seconds=time.perf_counter() - t0)
            except Exception as exc:
                records[name] = ImageRecord(name, "failed", _message(name, exc), time.perf_counter() - t0)
            t0 = time.perf_counter()
    return [records[name] for name in inputs]


def _columns(records: Sequence[ImageRecord]) -> dict[str, np.ndarray]:
    """Records as a Ray Data batch (column name -> array)."""
    return {f.name: np.array([getattr(r, f.name) for r in records]) for f in fields(ImageRecord)}


def _records(batch: Mapping[str, np.ndarray]) -> list[ImageRecord]:
    """A Ray Data batch of results as records."""
    n = len(batch["input"])
    return [
        ImageRecord(
            str(batch["input"][i]),
            str(batch["status"][i]),
            str(batch["error"][i]),
            float(batch["seconds"][i]),
            str(batch["node"][i]),
            int(batch["pid"][i]),
        )
        for i in range(n)
    ]


class SegmentWorker:
    """A Ray Data actor: pins its threads, loads the pipeline once, then segments batches of inputs.

    ``__call__`` takes a batch ``{"input": (n,) str}`` and returns the records' columns.
    """

    def __init__(self, job: SegmentJob, threads: int, protect: Sequence[str] = ()) -> None:
        self.cores = pin_threads(threads)  # before the runtime (numba, onnxruntime, cv2) starts
        import cv2
        import ray

        from samsem.runtime.config import RunOptions
        from samsem.runtime.load import load_pipeline

        cv2.setNumThreads(threads)
        self.job = job
        self.protect = tuple(Path(p) for p in protect)
        options = RunOptions(**job.options)
        self.pipeline = load_pipeline(
            job.model, backend=job.backend, device=job.device, precision=job.precision, options=options
        )
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = [str(name) for name in batch["input"]]
        records = segment_inputs(self.pipeline, self.job, inputs, self.protect)
        return _columns([replace(r, node=self.node, pid=os.getpid()) for r in records])


# --------------------------------------------------------------------------------------------- driver


@dataclass
class RayRun:
    """The outcome of :func:`segment_on_ray`: the summary (as the local command's), the layout used,
    the manifest path and every input's record (the run's own, in arrival order)."""

    summary: RunSummary
    layout: Layout
    manifest: Path
    records: list[ImageRecord]


def _write_line(stream: IO[str], record: Mapping[str, Any]) -> None:
    stream.write(json.dumps(record) + "\n")
    stream.flush()


def _remove_partial_files(out_dir: Path) -> int:
    from samsem.io import partial_files

    files = partial_files(out_dir)
    for f in files:
        f.unlink(missing_ok=True)
    return len(files)


@contextlib.contextmanager
def _connected(address: str | None) -> Iterator[None]:
    """This process connected to Ray: kept as it is when already connected, else ``ray.init(address)``
    for the time of the run (a local instance started here stops with it)."""
    import logging

    import ray

    if ray.is_initialized():
        yield
        return
    try:
        ray.init(address=address, logging_level=logging.WARNING, include_dashboard=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"cannot connect to the Ray cluster at {address or '(default)'}: {exc}") from None
    try:
        yield
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _data_context() -> Iterator[Any]:
    """Ray Data's context for this run, restored afterwards: no progress bars or start banners of its
    own (the driver shows one bar of images), its INFO logs hidden, and the pool waits until every
    worker has loaded the model before handing out work (an even start; a model that fails to load
    fails the run at once)."""
    import logging

    import ray.data

    ctx = ray.data.DataContext.get_current()
    saved = (ctx.enable_progress_bars, ctx.print_on_execution_start, ctx.wait_for_min_actors_s)
    ctx.wait_for_min_actors_s = WORKER_START_S
    # ray.data logs INFO banners; its progress module warns that its bars are off (they are, on purpose)
    loggers = {logging.getLogger("ray.data"): logging.WARNING}
    loggers[logging.getLogger("ray.data._internal.progress")] = logging.ERROR
    loggers[logging.getLogger("ray.data.exceptions")] = logging.CRITICAL  # the error reaches the caller
    levels = {logger: logger.level for logger in loggers}
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    for logger, level in loggers.items():
        logger.setLevel(level)
    try:
        yield ctx
    finally:
        ctx.enable_progress_bars, ctx.print_on_execution_start, ctx.wait_for_min_actors_s = saved
        for logger, level in levels.items():
            logger.setLevel(level)


def _cluster_nodes() -> list[dict[str, float]]:
    import ray

    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def segment_on_ray(
    inputs: Sequence[str],
    job: SegmentJob,
    cluster: ClusterOptions | None = None,
    *,
    progress: bool | None = None,
    stream: IO[str] | None = None,
) -> RayRun:
    """Segment ``inputs`` (local paths, folders, globs or URIs) on Ray into ``job.out_dir``.

    Writes what ``samsem segment`` writes (plus the run manifest); prints the summary to ``stream``
    (stderr); progress: the bar of images (None: only on a terminal). KeyboardInterrupt propagates after
    the manifest records the interruption.
    """
    import ray
    import ray.data

    from samsem.runtime.outputs import RunSummary, check_distinct_names, prepare_dir

    cluster = cluster or ClusterOptions()
    stream = stream or sys.stderr
    files = list_inputs(inputs)
    check_distinct_names(Path(f) for f in files)
    out_dir = Path(job.out_dir)
    prepare_dir(out_dir)
    _remove_partial_files(out_dir)
    in_out = tuple(f for f in files if not is_uri(f) and Path(f).resolve().parent == out_dir.resolve())
    calls = math.ceil(len(files) / cluster.images_per_call)
    summary = RunSummary()
    manifest = out_dir / MANIFEST
    run_id = uuid.uuid4().hex[:12]
    records: list[ImageRecord] = []  # what the run returned, in arrival order
    with _connected(cluster.address), _data_context(), open(manifest, "a", encoding="utf-8") as log:
        layout = plan_layout(_cluster_nodes(), job.device, cluster, calls)
        where = ray.get_runtime_context().gcs_address
        print(f"samsem segment: {len(files)} images on Ray at {where}: {layout.describe()}", file=stream)
        start = {
            "event": "start",
            "run": run_id,
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "inputs": len(files),
            "address": where,
            **asdict(layout),
            "images_per_call": cluster.images_per_call,
            "job": asdict(job),
        }
        _write_line(log, start)
        blocks = min(calls, layout.workers * BLOCKS_PER_WORKER)
        ds = ray.data.from_items([{"input": f} for f in files], override_num_blocks=blocks)
        mapped = ds.map_batches(
            SegmentWorker,
            batch_size=cluster.images_per_call,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=layout.workers),
            num_cpus=layout.threads,
            num_gpus=layout.gpus or None,
            fn_constructor_kwargs={"job": job, "threads": layout.threads, "protect": in_out},
        )
        outcome = "interrupted"
        try:
            records = _collect(
                mapped, len(files), summary, lambda r: _write_line(log, {"run": run_id, **r}), progress
            )
            outcome = "finished"
        except ray.exceptions.RayActorError as exc:
            outcome = "failed"
            if getattr(exc, "actor_init_failed", False):  # e.g. the model cannot be loaded there
                raise SamsemError(f"the Ray workers could not start: {_last_line(str(exc))}") from None
            raise
        except Exception:
            outcome = "failed"
            raise
        finally:
            counts = {"segmented": summary.done, "skipped": summary.skipped, "failed": len(summary.failures)}
            seconds = round(time.perf_counter() - summary.started, 3)
            _write_line(
                log, {"event": "end", "run": run_id, **counts, "seconds": seconds, "outcome": outcome}
            )
    _remove_partial_files(out_dir)
    missing = sorted(set(files) - {r.input for r in records})
    if missing:  # not expected: Ray retries dead workers' tasks until they finish
        raise SamsemError(f"Ray returned no result for {len(missing)} inputs, e.g. {missing[0]}")
    return RayRun(summary, layout, manifest, records)


def _collect(
    mapped: Any, total: int, summary: RunSummary, log: Callable[[dict[str, Any]], None], progress: bool | None
) -> list[ImageRecord]:
    """Consume the dataset's results as they come: count, log and show each input once."""
    from tqdm import tqdm

    records: dict[str, ImageRecord] = {}
    off = None if progress is None else not progress  # None: tqdm shows it on a terminal only
    with tqdm(total=total, unit="image", desc="segment", disable=off) as bar:
        for batch in mapped.iter_batches(batch_size=None, batch_format="numpy"):
            for record in _records(batch):
                if record.input in records:  # a retried task's duplicate: counted once
                    continue
                records[record.input] = record
                _count(summary, record)
                log(record.to_json())
                bar.update(1)
    return list(records.values())


def _last_line(text: str) -> str:
    """The last non-empty line of a remote traceback: the error itself."""
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), text)


def _count(summary: RunSummary, record: ImageRecord) -> None:
    if record.status == "done":
        summary.done += 1
    elif record.status == "skipped":
        summary.skipped += 1
    elif record.status == "completed":
        summary.completed += 1
    else:
        summary.failures[PurePosixPath(record.input).name] = record.error


def run_segment_ray(
    args: argparse.Namespace, options: RunOptions, vector: VectorOptions | None = None
) -> int:
    """``samsem segment … --ray [ADDRESS]``: the CLI's flags as a job on Ray (``vector``: the vector files
    of ``--vector``); returns the exit code."""
    address = args.ray or None
    if address is not None and Path(address).exists():
        raise ConfigError(
            f"--ray took the input {address!r} for the cluster address: put --ray after the inputs"
        )
    job = SegmentJob.create(
        args.out,
        options,
        model=args.model,
        backend=args.backend,
        device=args.device,
        precision=args.precision,
        preview=args.preview,
        overwrite=args.overwrite,
        vector=vector,
    )
    cluster = ClusterOptions(
        address,
        args.workers,
        args.gpus_per_worker,
        args.threads_per_worker,
        args.images_per_call or 1,
    )
    run = segment_on_ray(args.inputs, job, cluster)
    code = run.summary.report("samsem segment", Path(args.out))
    print(f"samsem segment: run manifest -> {run.manifest}", file=sys.stderr)
    return code
