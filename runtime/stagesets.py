"""How the pipeline's array work is done: numpy on the host, or torch where the model runs.

:class:`~samsem.runtime.pipeline.Pipeline` orchestrates (streams images, forms batches, keeps order and
reports) and hands the array work to one of two stage sets with the same methods:

* :class:`HostStages` — the stages of :mod:`samsem.runtime.stages` over numpy (OpenCV, Numba kernels
  that release the GIL); ``threaded``: the pipeline splits each batch into chunks and runs ``prepare``
  and ``finish`` on its worker threads;
* :class:`DeviceStages` — the same stages over torch tensors (:mod:`samsem.runtime.stages.tensors`) on
  the models' device; the image is uploaded once, and only prompt/decision statistics, the scores and
  the finished mask come back. A whole batch is one call (the device is the parallel part).

Both give the same masks and decisions (see :mod:`~samsem.runtime.stages.tensors` for where the device
path agrees only to float rounding).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from samsem.errors import ConfigError
from samsem.runtime.config import PipelineConfig
from samsem.runtime.models.segmenter import Segmenter, TensorSegmenter, tensor_device_of
from samsem.runtime.report import PatchRecord
from samsem.runtime.stages.classical import classical_segment
from samsem.runtime.stages.decision import Decisions, Reason, Source, decide, decide_from_stats
from samsem.runtime.stages.preprocess import Background, apply_range, resize_region, resize_square
from samsem.runtime.stages.prompts import make_prompts, to_input_coords
from samsem.runtime.stages.stitch import paste_owned
from samsem.runtime.stages.tiling import Tiling, extract_patch


@dataclass
class Job:
    """One image while its model inputs are in flight.

    raw (H, W) uint8/uint16 on the host; background: subtracted from every crop (None: flattening off);
    whole: model 1's input (S1, S1) float32 and its prompts (whole_points (P, 2) float32 in input
    pixels, whole_has_fg), made when the image is read; image/out: the image and the (H, W) uint8 mask
    being assembled where the stage set works (numpy or tensors); background_map: the background's map
    on the device (device stages); prob1/score1: model 1's output once it arrived; done: model inputs
    finished out of n_inputs.
    """

    name: str
    raw: np.ndarray
    levels: tuple[float, float]
    tiling: Tiling
    n_inputs: int
    background: Background | None = None
    whole: np.ndarray | None = None
    whole_points: np.ndarray | None = None
    whole_has_fg: bool = True
    image: Any = None
    out: Any = None
    background_map: Any = None
    prob1: Any = None
    score1: float | None = None
    done: int = 0
    patches: list[PatchRecord] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def add_times(self, times: dict[str, float]) -> None:
        for stage, seconds in times.items():
            self.timings[stage] = self.timings.get(stage, 0.0) + seconds


@dataclass(frozen=True, eq=False)
class Item:
    """One model input: the whole image (scale 1, index -1) or patch ``index`` (scale 2)."""

    job: Job
    scale: int
    index: int


@dataclass
class Prepared:
    """Model inputs of a batch: images (B, S, S) float32 (numpy or tensor), points (B, P, 2) float32 in
    input pixels (None without prompts), has_fg (B,) bool (False: no candidate foreground, not run),
    times: per-item stage seconds; ready: a CUDA event the inputs are ready at (device stages on a GPU)."""

    images: Any
    points: np.ndarray | None
    has_fg: np.ndarray
    times: list[dict[str, float]]
    ready: Any = None


@dataclass
class Finished:
    """What a finish step did for one job: its patch records, stage seconds and model inputs done."""

    job: Job
    records: list[PatchRecord]
    times: dict[str, float]
    inputs: int


class StageSet(Protocol):
    """The array work of the pipeline (see the module docstring)."""

    threaded: bool

    def open(self, job: Job) -> None:
        """Make ``job.image``/``job.out`` where the stages work (runs on the reading thread)."""
        ...

    def prepare(self, items: Sequence[Item], out: np.ndarray | None = None) -> Prepared:
        """Model inputs and prompts of ``items`` (any mix of scales sharing one segmenter); the host
        stages write the inputs into ``out`` (len(items), S, S) float32 when given."""
        ...

    def predict(self, seg: Segmenter, prepared: Prepared) -> tuple[Any, Any]:
        """Run ``seg`` on the inputs with foreground: probs (B, h, w) float32, scores (B,) float32 (on the
        device for the device stages, which return as soon as the model is launched)."""
        ...

    def take_model1(self, item: Item, prob: Any, score: Any) -> None:
        """Keep model 1's output of ``item.job``."""
        ...

    def finish(self, items: Sequence[Item], probs: Any, scores: Any) -> list[Finished]:
        """Decide and paste patches (scale-2 items) given their probs (n, h, w) and scores (n,)."""
        ...

    def fill_from_model1(self, job: Job) -> list[Finished]:
        """Single-scale 1: paste model 1's thresholded output over every patch's owned region."""
        ...

    def mask(self, job: Job) -> np.ndarray:
        """The assembled mask on the host: (H, W) uint8 {0, 1}."""
        ...


def _seed(config: PipelineConfig, item: Item) -> tuple[int, int, int]:
    """Prompt seed of an input: (run seed, scale, patch index + 1), never the order of the run."""
    return (config.seed, item.scale, item.index + 1)


def _box(box: np.ndarray) -> tuple[int, int, int, int]:
    y0, x0, y1, x1 = (int(v) for v in box)
    return y0, x0, y1, x1


def _record(item: Item, dec: Decisions | None, k: int, score: float) -> PatchRecord:
    box = _box(item.job.tiling.boxes[item.index])
    if dec is None:
        return PatchRecord(item.index, box, "model2", score=score)
    return PatchRecord(
        item.index,
        box,
        Source(int(dec.source[k])).name.lower(),
        Reason(int(dec.reason[k])).name.lower(),
        int(dec.speckles1[k]),
        int(dec.speckles2[k]),
        float(dec.agreement[k]),
        score,
        bool(dec.flagged[k]),
    )


def mapped_region(job: Job, box: np.ndarray) -> np.ndarray:
    """The image inside ``box`` = [y0, x0, y1, x1] as the stages see it: (y1 - y0, x1 - x0) float32 in
    [0, 1], flattened when the job has a background."""
    y0, x0, y1, x1 = _box(box)
    crop = job.raw[y0:y1, x0:x1]
    if job.background is None:
        return apply_range(crop, job.levels)
    rows, cols = np.arange(y0, y1), np.arange(x0, x1)
    return job.background.map_range(crop, rows, cols, job.raw.shape, job.levels)


def _mapped(job: Job, box: np.ndarray, patch: int) -> np.ndarray:
    """Patch ``box`` of the image as the stages see it: (patch, patch) float32 in [0, 1], the box's
    remainder mirrored as :func:`extract_patch` does (the mapping is per pixel, so mirroring after it
    gives the same values)."""
    y0, x0, y1, x1 = _box(box)
    region = mapped_region(job, box)
    if region.shape == (patch, patch):
        return region
    return extract_patch(region, np.array([0, 0, y1 - y0, x1 - x0]), patch)


def _fallback(config: PipelineConfig, job: Job, box: np.ndarray, patch: int) -> np.ndarray:
    """Sauvola on the patch at full resolution: (patch, patch) uint8 {0, 1}."""
    return classical_segment(_mapped(job, box, patch), config.fallback)


def _group(items: Sequence[Item]) -> dict[int, tuple[Job, list[int]]]:
    """Positions of ``items`` per job (jobs in first-seen order)."""
    groups: dict[int, tuple[Job, list[int]]] = {}
    for k, it in enumerate(items):
        groups.setdefault(id(it.job), (it.job, []))[1].append(k)
    return groups


def _finished(items: Sequence[Item], records: list[PatchRecord], times: dict[str, float]) -> list[Finished]:
    """One Finished per job of ``items`` (one record per item), times shared by item count."""
    out = []
    for job, ks in _group(items).values():
        share = len(ks) / len(items)
        out.append(Finished(job, [records[k] for k in ks], {s: t * share for s, t in times.items()}, len(ks)))
    return out


class HostStages:
    """The stages over numpy on the host; batches are split into chunks run on worker threads."""

    threaded = True

    def __init__(self, config: PipelineConfig, model1: Segmenter | None, model2: Segmenter | None) -> None:
        self.config = config
        self.model1 = model1
        self.model2 = model2

    def open(self, job: Job) -> None:
        job.image = job.raw
        job.out = np.zeros(job.raw.shape, np.uint8)

    def _patch(
        self, item: Item, seg: Segmenter, out: np.ndarray
    ) -> tuple[np.ndarray | None, bool, dict[str, float]]:
        """Model input of one patch written into ``out`` (S, S); its prompts and has_fg."""
        job, cfg = item.job, self.config
        p, size = job.tiling.patch, seg.input_size
        box = job.tiling.boxes[item.index]
        t0 = time.perf_counter()
        mapped = _mapped(job, box, p)
        image = resize_square(mapped, size, out)
        t1 = time.perf_counter()
        points, has_fg = None, True
        if seg.uses_prompts:  # on the patch at its own resolution when the model input enlarges it
            source = mapped if size > p else image
            pts, fg = make_prompts(source[None], cfg.prompts, [_seed(cfg, item)])
            points, has_fg = pts[0], bool(fg[0])
            if source is not image:
                points = to_input_coords(points, (p, p), size)
        times = {"prepare": t1 - t0}
        if seg.uses_prompts:
            times["prompts"] = time.perf_counter() - t1
        return points, has_fg, times

    def prepare(self, items: Sequence[Item], out: np.ndarray | None = None) -> Prepared:
        seg = self.model1 if items[0].scale == 1 else self.model2
        assert seg is not None
        if out is None:
            out = np.empty((len(items), seg.input_size, seg.input_size), np.float32)
        points: list[np.ndarray | None] = []
        has_fg: list[bool] = []
        times: list[dict[str, float]] = []
        for k, it in enumerate(items):
            if it.scale == 1:
                assert it.job.whole is not None
                out[k] = it.job.whole
                points.append(it.job.whole_points)
                has_fg.append(it.job.whole_has_fg)
                times.append({})
            else:
                pts, fg, t = self._patch(it, seg, out[k])
                points.append(pts)
                has_fg.append(fg)
                times.append(t)
        stacked = None if points[0] is None else np.stack(points)  # type: ignore[arg-type]
        return Prepared(out, stacked, np.asarray(has_fg, bool), times)

    def predict(self, seg: Segmenter, prepared: Prepared) -> tuple[np.ndarray, np.ndarray]:
        images, run = prepared.images, np.flatnonzero(prepared.has_fg)
        scores = np.zeros(len(images), np.float32)
        if not run.size:
            return np.zeros((len(images), seg.input_size, seg.input_size), np.float32), scores
        points = None if prepared.points is None else prepared.points[run]
        probs, sc = seg.predict(images if run.size == len(images) else images[run], points)
        scores[run] = sc
        if run.size == len(images):
            return probs, scores
        out = np.zeros((len(images), *probs.shape[1:]), np.float32)
        out[run] = probs
        return out, scores

    def take_model1(self, item: Item, prob: Any, score: Any) -> None:
        item.job.prob1, item.job.score1 = prob, float(score)

    def finish(self, items: Sequence[Item], probs: np.ndarray, scores: np.ndarray) -> list[Finished]:
        cfg = self.config
        two_scale = cfg.single_scale is None
        p = items[0].job.tiling.patch
        t0 = time.perf_counter()
        n = len(items)
        m2 = np.empty((n, p, p), np.uint8)
        m1 = np.zeros((n, p, p), np.uint8) if two_scale else m2
        sizes = np.empty((n, 2), np.int64)
        for k, (it, prob) in enumerate(zip(items, probs, strict=True)):
            job = it.job
            y0, x0, y1, x1 = _box(job.tiling.boxes[it.index])
            sizes[k] = (y1 - y0, x1 - x0)
            up = prob if prob.shape == (p, p) else resize_region(prob, (p, p), np.array([0, 0, p, p]))
            np.greater_equal(up, cfg.threshold, out=m2[k].view(bool))
            if two_scale:
                region = resize_region(job.prob1, job.raw.shape, job.tiling.boxes[it.index])
                np.greater_equal(region, cfg.threshold, out=m1[k, : y1 - y0, : x1 - x0].view(bool))
        dec = None
        if two_scale:
            valid = None
            if (sizes < p).any():
                valid = np.zeros((n, p, p), bool)
                for k, (bh, bw) in enumerate(sizes):
                    valid[k, :bh, :bw] = True
            side1 = self.model1.input_size  # type: ignore[union-attr]
            scale1 = np.array([max(it.job.raw.shape) / side1 for it in items])
            dec = decide(m1, m2, cfg.decision, valid, scale1, parallel=False)
        t1 = time.perf_counter()
        records = []
        for k, it in enumerate(items):
            job = it.job
            box = job.tiling.boxes[it.index]
            bh, bw = sizes[k]
            if dec is None:
                chosen = m2[k]
            else:
                source = Source(int(dec.source[k]))
                chosen = {Source.MODEL1: dec.mask1[k], Source.MODEL2: dec.mask2[k]}.get(source)
                if chosen is None:
                    chosen = _fallback(cfg, job, box, p)
            paste_owned(job.out, chosen[:bh, :bw], box, job.tiling.owned[it.index])
            records.append(_record(it, dec, k, float(scores[k])))
        return _finished(items, records, {"decide": t1 - t0, "stitch": time.perf_counter() - t1})

    def fill_from_model1(self, job: Job) -> list[Finished]:
        t0 = time.perf_counter()
        records = []
        for index, (box, owned) in enumerate(zip(job.tiling.boxes, job.tiling.owned, strict=True)):
            region = resize_region(job.prob1, job.out.shape, owned)
            job.out[owned[0] : owned[2], owned[1] : owned[3]] = region >= self.config.threshold
            records.append(PatchRecord(index, _box(box), "model1", score=job.score1))
        return [Finished(job, records, {"stitch": time.perf_counter() - t0}, 1)]

    def mask(self, job: Job) -> np.ndarray:
        return job.out


class DeviceStages:
    """The stages over torch tensors on ``device`` (the models' device); one call per batch."""

    threaded = False

    def __init__(
        self, config: PipelineConfig, model1: Segmenter | None, model2: Segmenter | None, device: str
    ) -> None:
        import torch

        from samsem.runtime.stages import tensors

        for seg in (model1, model2):
            if seg is not None and tensor_device_of(seg) is None:
                raise ConfigError(
                    f"{type(seg).__name__} cannot run on device tensors; use the host stages (device=None)"
                )
        self.config = config
        self.model1 = model1
        self.model2 = model2
        self.torch = torch
        self.T = tensors
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        # uploads (reading thread) and input preparation run on their own streams, beside the model's
        self.upload_stream = torch.cuda.Stream(self.device) if cuda else None
        self.prepare_stream = torch.cuda.Stream(self.device) if cuda else None

    def _on(self, stream: Any) -> Any:
        return self.torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()

    def open(self, job: Job) -> None:
        torch = self.torch
        with self._on(self.upload_stream):
            job.image = self.T.upload(job.raw, self.device)
            job.out = torch.zeros(job.raw.shape, dtype=torch.uint8, device=self.device)
            if job.background is not None:
                job.background_map = torch.from_numpy(job.background.map).to(self.device)
        if self.upload_stream is not None:
            self.upload_stream.synchronize()
            job.image.record_stream(self.prepare_stream)  # freed only when that stream's work is done
            if job.background_map is not None:
                job.background_map.record_stream(self.prepare_stream)
            job.out.record_stream(torch.cuda.current_stream(self.device))

    def prepare(self, items: Sequence[Item], out: np.ndarray | None = None) -> Prepared:
        with self._on(self.prepare_stream):
            prepared = self._prepare(items)
            if self.prepare_stream is not None:
                prepared.ready = self.torch.cuda.Event()
                prepared.ready.record(self.prepare_stream)
        return prepared

    def _prepare(self, items: Sequence[Item]) -> Prepared:
        torch, T, cfg = self.torch, self.T, self.config
        seg = self.model1 if items[0].scale == 1 else self.model2
        assert seg is not None
        size = seg.input_size
        t0 = time.perf_counter()
        parts: list[Any] = [None] * len(items)
        points: list[Any] = [None] * len(items)
        has_fg = np.ones(len(items), bool)
        patch_pos = [k for k, it in enumerate(items) if it.scale == 2]
        for k, it in enumerate(items):
            if it.scale == 1:
                assert it.job.whole is not None
                parts[k] = torch.from_numpy(it.job.whole).to(self.device)[None]
                points[k] = it.job.whole_points
                has_fg[k] = it.job.whole_has_fg
        mapped = None
        if patch_pos:
            pitems = [items[k] for k in patch_pos]
            p = pitems[0].job.tiling.patch
            chunks = []
            for job, ks in _group(pitems).values():
                boxes = job.tiling.boxes[[pitems[k].index for k in ks]]
                crops = T.extract_patches(job.image, boxes, p)
                if job.background is not None:
                    crops = T.flatten_patches(
                        crops, job.background_map, job.background.level, job.raw.shape, boxes
                    )
                chunks.append(T.apply_range(crops, job.levels))
            mapped = torch.cat(chunks) if len(chunks) > 1 else chunks[0]
            order = [k for _, ks in _group(pitems).values() for k in ks]  # mapped rows follow job groups
            inputs = T.resize_square(mapped, size)
            for row, k in enumerate(order):
                parts[patch_pos[k]] = inputs[row : row + 1]
        t1 = time.perf_counter()
        if seg.uses_prompts and patch_pos:
            assert mapped is not None
            source = mapped if size > mapped.shape[-1] else inputs
            seeds = [_seed(cfg, pitems[k]) for k in order]
            pts, fg = T.make_prompts(source, cfg.prompts, seeds)
            if source is mapped:
                pts = to_input_coords(pts, tuple(mapped.shape[-2:]), size)
            for row, k in enumerate(order):
                points[patch_pos[k]] = pts[row]
                has_fg[patch_pos[k]] = fg[row]
        t2 = time.perf_counter()
        images = torch.cat(parts) if len(parts) > 1 else parts[0]
        stacked = np.stack(points) if seg.uses_prompts else None
        per = {"prepare": (t1 - t0) / len(items)}
        if seg.uses_prompts:
            per["prompts"] = (t2 - t1) / len(items)
        return Prepared(images, stacked, has_fg, [dict(per) for _ in items])

    def predict(self, seg: Segmenter, prepared: Prepared) -> tuple[Any, Any]:
        torch = self.torch
        images = prepared.images
        if prepared.ready is not None:  # inputs made on the preparation stream
            current = torch.cuda.current_stream(self.device)
            current.wait_event(prepared.ready)
            images.record_stream(current)
        run = np.flatnonzero(prepared.has_fg)
        scores = torch.zeros(len(images), dtype=torch.float32, device=self.device)
        if not run.size:
            size = seg.input_size
            return torch.zeros((len(images), size, size), device=self.device), scores
        idx = torch.from_numpy(run).to(self.device)
        points = None
        if prepared.points is not None:
            points = torch.from_numpy(prepared.points[run]).to(self.device)
        sub = images if run.size == len(images) else images[idx]
        assert isinstance(seg, TensorSegmenter)  # checked in __init__
        probs, sc = seg.predict_tensors(sub, points)
        scores[idx] = sc.to(torch.float32)
        if run.size == len(images):
            return probs, scores
        out = torch.zeros((len(images), *probs.shape[1:]), dtype=probs.dtype, device=self.device)
        out[idx] = probs
        return out, scores

    def take_model1(self, item: Item, prob: Any, score: Any) -> None:
        item.job.prob1, item.job.score1 = prob, float(score)

    def finish(self, items: Sequence[Item], probs: Any, scores: Any) -> list[Finished]:
        torch, T, cfg = self.torch, self.T, self.config
        scores = scores.cpu().numpy()  # waits for the model
        two_scale = cfg.single_scale is None
        p = items[0].job.tiling.patch
        t0 = time.perf_counter()
        boxes = np.stack([it.job.tiling.boxes[it.index] for it in items])
        sizes = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)
        m2 = T.resize_probs(probs, p) >= cfg.threshold
        dec = None
        if two_scale:
            valid = T.valid_masks(sizes, p, self.device) if (sizes < p).any() else None
            m1 = torch.empty_like(m2)
            for job, ks in _group(items).values():
                idx = torch.tensor(ks, device=self.device)
                m1[idx] = T.upsample_boxes(job.prob1, job.raw.shape, boxes[ks], p) >= cfg.threshold
            if valid is not None:
                m1 &= valid
            stats, a, b = T.patch_stats(
                m1, m2, valid, cfg.decision.speckle_max_px, cfg.decision.rule == "robust"
            )
            side1 = self.model1.input_size  # type: ignore[union-attr]
            scale1 = np.array([max(it.job.raw.shape) / side1 for it in items])
            dec = decide_from_stats(stats, cfg.decision, scale1)
            to1 = torch.from_numpy(dec.source == Source.MODEL1).to(self.device)[:, None, None]
            chosen = torch.where(to1, a, b).to(torch.uint8)
            for k in np.flatnonzero(dec.source == Source.FALLBACK):
                fill = _fallback(cfg, items[int(k)].job, boxes[k], p)
                chosen[int(k)] = torch.from_numpy(fill).to(self.device)
        else:
            chosen = m2.to(torch.uint8)
        t1 = time.perf_counter()
        for job, ks in _group(items).values():
            T.paste(job.out, chosen[ks], boxes[ks], job.tiling.owned[[items[k].index for k in ks]])
        records = [_record(it, dec, k, float(scores[k])) for k, it in enumerate(items)]
        return _finished(items, records, {"decide": t1 - t0, "stitch": time.perf_counter() - t1})

    def fill_from_model1(self, job: Job) -> list[Finished]:
        t0 = time.perf_counter()
        tiling = job.tiling
        p = tiling.patch
        ups = self.T.upsample_boxes(job.prob1, job.raw.shape, tiling.owned, p) >= self.config.threshold
        self.T.paste(job.out, ups.to(self.torch.uint8), tiling.owned, tiling.owned)
        records = [
            PatchRecord(index, _box(box), "model1", score=job.score1)
            for index, box in enumerate(tiling.boxes)
        ]
        return [Finished(job, records, {"stitch": time.perf_counter() - t0}, 1)]

    def mask(self, job: Job) -> np.ndarray:
        return job.out.cpu().numpy()
