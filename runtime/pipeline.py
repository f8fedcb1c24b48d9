"""The multi-scale segmentation pipeline (the SAMSEM method) as a thin stateful object over pure stages.

For each image: model 1 sees the whole image resized to its input size; model 2 sees patches (512 px,
>= 10 % overlap) resized to its input size; per patch :func:`~samsem.runtime.stages.decision.decide` picks
model 1's mask, model 2's mask or the Sauvola fallback; each pixel is taken from the one patch whose
centre is nearest (:mod:`~samsem.runtime.stages.stitch`).

Work is streamed so that the model never waits for the runtime:

* a reading thread loads the next images (``prefetch`` ahead), computes their intensity levels, model
  1's input and its prompts, and (device path) uploads them, while the current image is segmented;
* model inputs are produced lazily and batched up to ``batch_size`` across images (model-1 and model-2
  inputs share a batch when one set of weights serves both scales); the inputs of the next batch are
  prepared while the model runs the current one, and a batch's decisions and stitching run while the
  model runs the next;
* on the host (:class:`~samsem.runtime.stagesets.HostStages`) each batch's preparation and decisions are
  split over ``workers`` threads (OpenCV and the Numba kernels release the GIL); when the models run on
  CUDA (:class:`~samsem.runtime.stagesets.DeviceStages`) the same stages run as torch operations on the
  GPU and the image, the model's outputs and the mask stay there until the mask is finished.

Model 1's output is kept at its low resolution and upsampled only inside the patch at hand. Peak memory
is therefore the images in flight, their masks and a per-batch budget, whatever the image size.

Per-image work depends only on (image, models, config): prompts are seeded by (seed, scale, patch
index), never by the order of images or threads, patches write disjoint pixels, and results come in
input order, so any worker count and any worker process give the same mask.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from samsem.errors import ConfigError, SamsemError
from samsem.runtime.config import PipelineConfig
from samsem.runtime.models.segmenter import Segmenter, tensor_device_of
from samsem.runtime.report import ImageReport, ModelInfo
from samsem.runtime.stages.postprocess import clean_mask, remove_faint
from samsem.runtime.stages.preprocess import (
    apply_range,
    estimate_background,
    flatten_window,
    intensity_range,
    resize_square,
)
from samsem.runtime.stages.prompts import make_prompts, to_input_coords
from samsem.runtime.stages.tiling import Tiling, make_tiling
from samsem.runtime.stagesets import (
    DeviceStages,
    Finished,
    HostStages,
    Item,
    Job,
    Prepared,
    StageSet,
    mapped_region,
)

ImageLoader = Callable[[], np.ndarray]

# batches whose inputs are prepared before the model runs the current one
_LOOKAHEAD = 1


@dataclass
class SegmentResult:
    """One image's result: ``image`` (H, W), ``mask`` (H, W) uint8 {0, 1} and its ``report``."""

    name: str
    image: np.ndarray
    mask: np.ndarray
    report: ImageReport


@dataclass
class FailedImage:
    """An image that could not be segmented (bad input); the batch goes on."""

    name: str
    error: SamsemError


def default_workers() -> int:
    """CPU worker threads of a pipeline: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def tensor_device(segmenters: Sequence[Segmenter | None]) -> str | None:
    """The CUDA device every given segmenter declares for its tensor path
    (:class:`~samsem.runtime.models.segmenter.TensorSegmenter`), else None."""
    devices = {tensor_device_of(s) for s in segmenters if s is not None}
    if len(devices) == 1:
        (device,) = devices
        if isinstance(device, str) and device.startswith("cuda"):
            return device
    return None


class Pipeline:
    """Segment images with two segmenters (or one, at both scales) and the per-patch decision.

    model1/model2: :class:`Segmenter` for the whole-image and patch scales; either may be None when
    ``config.single_scale`` selects the other. ``info`` (what the models are) goes into every report.
    device: where the stages run: None chooses the models' CUDA device when every segmenter declares one
    for its tensor path (device-resident stages, :func:`tensor_device`), else the host (numpy stages); "host"
    forces the numpy stages; "cpu" or "cuda[:N]" forces the device-resident stages there (tests run
    them on "cpu"). workers: host threads for the stages (default: the usable cores); prefetch: images
    read ahead.
    Build one with :func:`samsem.runtime.load.load_pipeline`.
    """

    def __init__(
        self,
        model1: Segmenter | None,
        model2: Segmenter | None,
        config: PipelineConfig | None = None,
        info: ModelInfo | None = None,
        *,
        device: str | None = None,
        workers: int | None = None,
        prefetch: int = 1,
    ) -> None:
        self.config = config or PipelineConfig()
        scale = self.config.single_scale
        if scale != 2 and model1 is None:
            raise SamsemError("model 1 is required unless single_scale == 2")
        if scale != 1 and model2 is None:
            raise SamsemError("model 2 is required unless single_scale == 1")
        if workers is not None and workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        if prefetch < 1:
            raise ConfigError(f"prefetch must be >= 1, got {prefetch}")
        self.model1 = model1
        self.model2 = model2
        self.info = info
        self.workers = workers or default_workers()
        self.prefetch = prefetch
        used = [model1 if scale != 2 else None, model2 if scale != 1 else None]
        self.device = tensor_device(used) if device is None else None if device == "host" else device
        self.stages: StageSet = (
            HostStages(self.config, model1, model2)
            if self.device is None
            else DeviceStages(self.config, model1, model2, self.device)
        )

    # ------------------------------------------------------------------ public API
    def segment(self, image: np.ndarray, name: str = "image") -> SegmentResult:
        """Segment one in-memory image (H, W) uint8/uint16."""
        (result,) = self.segment_many([(name, lambda: image)])
        if isinstance(result, FailedImage):
            raise result.error
        return result

    def segment_many(
        self,
        sources: Iterable[tuple[str, ImageLoader]],
        progress: Callable[[int], None] | None = None,
        check: Callable[[], None] | None = None,
    ) -> Generator[SegmentResult | FailedImage, None, None]:
        """Segment a stream of images, batching model inputs across them.

        sources: (name, loader) pairs; a loader returns (H, W) uint8/uint16 and may raise
        :class:`SamsemError`, which yields a :class:`FailedImage` instead of stopping the run. Loaders
        are called on a reading thread, ``prefetch`` images ahead. ``progress(n)`` is called with the
        number of model inputs finished after every batch. ``check()`` is called at every stage
        boundary (between an image's reading, flattening and preparation, before every model batch and
        before an image is finished); an exception it raises (a cancellation, a passed deadline) ends
        the run with that exception. Results come in input order; closing the generator stops the
        reading thread and the workers.
        """
        run = _Run(self, sources, progress, check or _go_on)
        try:
            yield from run.results()
        finally:
            run.close()

    def count_inputs(self, height: int, width: int) -> int:
        """Number of model inputs an image of this size needs (for progress bars)."""
        return self._n_inputs(make_tiling(height, width, self.config.tiling))

    def _n_inputs(self, tiling: Tiling) -> int:
        """Model inputs of an image with this tiling: its patches (scale 2) and the whole image (scale 1)."""
        scale = self.config.single_scale
        return (0 if scale == 1 else len(tiling)) + (0 if scale == 2 else 1)

    # ------------------------------------------------------------------ internals
    def _segmenter(self, item: Item) -> Segmenter:
        return self.model1 if item.scale == 1 else self.model2  # type: ignore[return-value]

    def _open_job(self, name: str, load: ImageLoader, check: Callable[[], None] = lambda: None) -> Job:
        """Read one image and make what its model inputs need (runs on the reading thread; ``check``
        between the stages)."""
        t0 = time.perf_counter()
        raw = load()
        if raw.ndim != 2 or raw.size == 0:
            raise SamsemError(f"{name}: expected a non-empty (H, W) grayscale image, got shape {raw.shape}")
        t1 = time.perf_counter()
        check()
        cfg = self.config
        dark = cfg.metal == "dark"
        window = flatten_window(cfg.flatten, *raw.shape)  # what the image can use, before any work
        background = estimate_background(raw, window, dark)
        t2 = time.perf_counter()
        check()
        tiling = make_tiling(raw.shape[0], raw.shape[1], cfg.tiling)
        levels = intensity_range(raw, cfg.low_pct, cfg.high_pct, cfg.clip_glare, dark, background)
        job = Job(name, raw, levels, tiling, self._n_inputs(tiling), background)
        t3 = time.perf_counter()
        times = {"read": t1 - t0, "flatten": t2 - t1, "levels": t3 - t2}
        if cfg.single_scale != 2:
            seg = self.model1
            assert seg is not None
            size = seg.input_size
            whole = resize_square(raw, size)  # resized as uint8: no full-size float copy
            job.whole = apply_range(whole if background is None else background.flatten(whole), job.levels)
            t4 = time.perf_counter()
            times["prepare"] = t4 - t3
            if seg.uses_prompts:  # at the image's own resolution when the input enlarges it
                enlarge = raw.shape[0] <= size and raw.shape[1] <= size and raw.shape != (size, size)
                source = mapped_region(job, np.array([0, 0, *raw.shape])) if enlarge else job.whole
                points, has_fg = make_prompts(source[None], cfg.prompts, [(cfg.seed, 1, 0)])
                job.whole_points = to_input_coords(points[0], raw.shape, size) if enlarge else points[0]
                job.whole_has_fg = bool(has_fg[0])
                times["prompts"] = time.perf_counter() - t4
        t5 = time.perf_counter()
        check()
        self.stages.open(job)
        times["upload"] = time.perf_counter() - t5
        job.add_times(times)
        return job

    def _items(self, job: Job) -> Iterator[Item]:
        """Model inputs of one image, in order: the whole image first, then the patches."""
        if self.config.single_scale != 2:
            yield Item(job, 1, -1)
        if self.config.single_scale != 1:
            for index in range(len(job.tiling)):
                yield Item(job, 2, index)

    def _result(self, job: Job) -> SegmentResult:
        """Finish an image: its mask on the host, cleaned, and its report."""
        cfg = self.config
        t0 = time.perf_counter()
        mask = self.stages.mask(job)
        clean_mask(mask, cfg.postprocess)
        remove_faint(mask, partial(mapped_region, job), cfg.postprocess)
        job.add_times({"postprocess": time.perf_counter() - t0})
        report = ImageReport(
            name=job.name,
            height=int(job.raw.shape[0]),
            width=int(job.raw.shape[1]),
            dtype=str(job.raw.dtype),
            intensity_levels=job.levels,
            model=self.info,
            config=cfg.to_dict(),
            flatten_px=flatten_window(cfg.flatten, *job.raw.shape),
            mode="two-scale" if cfg.single_scale is None else f"single-scale {cfg.single_scale}",
            model1_score=job.score1,
            patches=tuple(sorted(job.patches, key=lambda r: r.index)),
            foreground_fraction=float(mask.mean()),
            timings_s=dict(job.timings),
        )
        return SegmentResult(job.name, job.raw, mask, report)


_END = object()


def _go_on() -> None:
    """The check of a run that nothing stops."""


@dataclass
class _Crash:
    """An unexpected error on the reading thread, re-raised on the consumer's."""

    error: BaseException


def _chunks(items: list[Item], n: int) -> list[list[Item]]:
    """``items`` split into at most ``n`` contiguous, nearly equal chunks."""
    n = max(1, min(n, len(items)))
    bounds = [len(items) * k // n for k in range(n + 1)]
    return [items[bounds[k] : bounds[k + 1]] for k in range(n)]


class _Done(Future):
    """An already finished future (stage calls made on the consumer's thread)."""

    def __init__(self, value: Any) -> None:
        super().__init__()
        self.set_result(value)


class _Run:
    """One ``segment_many`` call: the reading thread, the worker pool and the bookkeeping.

    All job state is changed on the consumer's thread, except each job's mask, into which workers paste
    disjoint owned regions.
    """

    def __init__(
        self,
        pipe: Pipeline,
        sources: Iterable[tuple[str, ImageLoader]],
        progress: Callable[[int], None] | None,
        check: Callable[[], None],
    ) -> None:
        self.pipe = pipe
        self.check = check
        self.stages = pipe.stages
        self.progress = progress
        self.pool = ThreadPoolExecutor(pipe.workers, thread_name_prefix="samsem-stage")
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=pipe.prefetch)
        self.stop = threading.Event()
        self.open: deque[Job | FailedImage] = deque()  # input order, not yet yielded
        self.ahead: deque[tuple[list[Item], list[Future]]] = deque()  # batches waiting for the model
        self.finishing: deque[Future] = deque()  # decisions in flight, in submission order
        self.final: dict[int, Future] = {}  # id(job) -> its finished result
        # more open images than the batches in flight can hold: the results lag behind the reading
        self.max_open = (_LOOKAHEAD + 2) * pipe.config.batch_size + pipe.prefetch
        self.reader = threading.Thread(target=self._read, args=(iter(sources),), daemon=True)
        self.reader.start()

    # ------------------------------------------------------------ reading thread
    def _read(self, sources: Iterator[tuple[str, ImageLoader]]) -> None:
        try:
            for name, load in sources:
                if self.stop.is_set():
                    return
                try:
                    entry: Any = self.pipe._open_job(name, load, self.check)
                except SamsemError as exc:
                    entry = FailedImage(name, exc)
                self._put(entry)
            self._put(_END)
        except BaseException as exc:  # re-raised on the consumer's thread
            self._put(_Crash(exc))

    def _put(self, entry: Any) -> None:
        while not self.stop.is_set():
            try:
                self.queue.put(entry, timeout=0.1)
                return
            except queue.Full:
                continue

    # ------------------------------------------------------------ consumer
    def results(self) -> Iterator[SegmentResult | FailedImage]:
        pipe = self.pipe
        batch: list[Item] = []
        while True:
            entry = self.queue.get()
            if entry is _END:
                break
            if isinstance(entry, _Crash):
                raise entry.error
            self.open.append(entry)
            if isinstance(entry, Job):
                for item in pipe._items(entry):
                    if batch and pipe._segmenter(batch[0]) is not pipe._segmenter(item):
                        self._submit(batch)
                        batch = []
                    batch.append(item)
                    if len(batch) == pipe.config.batch_size:
                        self._submit(batch)
                        batch = []
                        yield from self._ready(block=False)
            # images read but not yielded stay bounded: wait for results when reading runs ahead
            yield from self._ready(block=len(self.open) > self.max_open)
        if batch:
            self._submit(batch)
        while self.ahead:
            self._run_next()
        yield from self._ready(block=True)

    def _submit(self, batch: list[Item]) -> None:
        """Start preparing a batch's inputs; run the model on the batch before it."""
        if self.stages.threaded:  # chunks on the workers, written into one batch array
            size = self.pipe._segmenter(batch[0]).input_size
            images = np.empty((len(batch), size, size), np.float32)
            futures, start = [], 0
            for chunk in _chunks(batch, self.pipe.workers):
                futures.append(
                    self.pool.submit(self.stages.prepare, chunk, images[start : start + len(chunk)])
                )
                start += len(chunk)
        else:  # prepared when the model runs the batch before (see _run_next)
            futures = []
        self.ahead.append((batch, futures))
        while len(self.ahead) > _LOOKAHEAD:
            self._run_next()

    def _run_next(self) -> None:
        self.check()
        items, futures = self.ahead.popleft()
        if not futures:
            futures.append(_Done(self.stages.prepare(items)))
        parts: list[Prepared] = [f.result() for f in futures]
        if len(parts) == 1:
            prepared = parts[0]
        else:
            points = (
                None
                if parts[0].points is None
                else np.concatenate([p.points for p in parts if p.points is not None])
            )
            base = parts[0].images.base  # the chunks are views of one batch array
            prepared = Prepared(
                base
                if base is not None and len(base) == len(items)
                else np.concatenate([p.images for p in parts]),
                points,
                np.concatenate([p.has_fg for p in parts]),
                [t for p in parts for t in p.times],
            )
        for it, times in zip(items, prepared.times, strict=True):
            it.job.add_times(times)
        seg = self.pipe._segmenter(items[0])
        t0 = time.perf_counter()
        probs, scores = self.stages.predict(seg, prepared)
        share = (time.perf_counter() - t0) / len(items)
        if self.ahead and not self.ahead[0][1]:  # device stages: prepare the next batch while the model runs
            self.ahead[0][1].append(_Done(self.stages.prepare(self.ahead[0][0])))
        patches: list[int] = []
        for k, it in enumerate(items):
            it.job.add_times({f"model{it.scale}": share})
            if it.scale == 1:
                self.stages.take_model1(it, probs[k], scores[k])
                if self.pipe.config.single_scale == 1:  # done when its patches are filled
                    self._finish(self.stages.fill_from_model1, it.job)
                else:
                    it.job.done += 1
            else:
                patches.append(k)
        if patches:
            sub = [items[k] for k in patches]
            whole = len(patches) == len(items)
            p_probs = probs if whole else probs[patches]
            p_scores = scores if whole else scores[patches]
            if self.stages.threaded:
                bounds = [len(sub) * k // self.pipe.workers for k in range(self.pipe.workers + 1)]
                for a, b in itertools.pairwise(bounds):
                    if b > a:
                        self._finish(self.stages.finish, sub[a:b], p_probs[a:b], p_scores[a:b])
            else:
                self._finish(self.stages.finish, sub, p_probs, p_scores)
        if self.progress is not None:
            self.progress(len(items))
        self._collect(block=False)

    def _finish(self, fn: Callable[..., list[Finished]], *args: Any) -> None:
        if self.stages.threaded:
            self.finishing.append(self.pool.submit(fn, *args))
            while len(self.finishing) > 4 * self.pipe.workers:  # bounded work in flight
                self._apply(self.finishing.popleft().result())
        else:
            self._apply(fn(*args))

    def _apply(self, done: list[Finished]) -> None:
        for f in done:
            f.job.patches.extend(f.records)
            f.job.add_times(f.times)
            f.job.done += f.inputs

    def _collect(self, block: bool) -> None:
        while self.finishing and (block or self.finishing[0].done()):
            self._apply(self.finishing.popleft().result())

    def _ready(self, block: bool) -> Iterator[SegmentResult | FailedImage]:
        """Yield finished images at the head of the input order (all of them when ``block``).

        Every complete image at the head gets its result computed at once (on the workers), not only
        the first, so results keep pace with reading however small the images are."""
        self._collect(block)
        for job in self.open:
            if isinstance(job, FailedImage):
                continue
            if job.done < job.n_inputs:
                break
            if id(job) not in self.final:
                self.check()
                self.final[id(job)] = (
                    self.pool.submit(self.pipe._result, job)
                    if self.stages.threaded
                    else _Done(self.pipe._result(job))
                )
        while self.open:
            head = self.open[0]
            if isinstance(head, FailedImage):
                self.open.popleft()
                yield head
                continue
            fut = self.final.get(id(head))
            if fut is None or not (block or fut.done()):
                return
            self.open.popleft()
            del self.final[id(head)]
            yield fut.result()

    def close(self) -> None:
        self.stop.set()
        try:
            while True:  # unblock the reader
                self.queue.get_nowait()
        except queue.Empty:
            pass
        self.reader.join(timeout=5.0)
        self.pool.shutdown(wait=True, cancel_futures=True)
