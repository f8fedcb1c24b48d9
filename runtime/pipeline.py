"""The multi-scale segmentation pipeline (the SAMSEM method) as a thin stateful object over pure stages.

For each image: model 1 sees the whole image resized to its input size; model 2 sees patches (512 px,
>= 10 % overlap) resized to its input size; per patch :func:`~samsem.runtime.stages.decision.decide` picks
model 1's mask, model 2's mask or the Sauvola fallback; each pixel is taken from the one patch whose
centre is nearest (:mod:`~samsem.runtime.stages.stitch`).

Work is streamed: model inputs are produced lazily and batched up to ``batch_size`` across images
(model-1 and model-2 inputs share a batch when one set of weights serves both scales), each patch is
decided and pasted into the output as soon as its batch returns, and model 1's output is kept at its
low resolution and upsampled only inside the patch at hand. Peak memory is therefore the image, its
output mask and a per-batch budget, whatever the image size.

Per-image work depends only on (image, models, config): prompts are seeded by (seed, scale, patch
index), never by the order of images in a run, so any worker process gives the same mask.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

from samsem.errors import SamsemError
from samsem.runtime.config import PipelineConfig
from samsem.runtime.models.segmenter import Segmenter
from samsem.runtime.report import ImageReport, ModelInfo, PatchRecord
from samsem.runtime.stages.classical import classical_segment
from samsem.runtime.stages.decision import Reason, Source, decide
from samsem.runtime.stages.postprocess import clean_mask
from samsem.runtime.stages.preprocess import apply_range, intensity_range, resize_region, resize_square
from samsem.runtime.stages.prompts import make_prompts
from samsem.runtime.stages.stitch import paste_owned
from samsem.runtime.stages.tiling import Tiling, extract_patch, make_tiling

ImageLoader = Callable[[], np.ndarray]


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


@dataclass
class _Job:
    """State of one image while its model inputs are in flight."""

    name: str
    raw: np.ndarray
    levels: tuple[float, float]
    tiling: Tiling
    out: np.ndarray
    pending: int = 0
    prob1: np.ndarray | None = None
    score1: float | None = None
    patches: list[PatchRecord] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def model1_prob(self) -> np.ndarray:
        """Model 1's probabilities (h, w); the pipeline orders batches so they come before any use."""
        if self.prob1 is None:
            raise RuntimeError(f"{self.name}: model 1's output is used before it arrived")
        return self.prob1

    def add_time(self, stage: str, seconds: float) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + seconds


@dataclass
class _Item:
    """One model input: the whole image (scale 1, index -1) or one patch (scale 2)."""

    job: _Job
    scale: int
    index: int
    image: np.ndarray  # (S, S) float32 in [0, 1]


class Pipeline:
    """Segment images with two segmenters (or one, at both scales) and the per-patch decision.

    model1/model2: :class:`Segmenter` for the whole-image and patch scales; either may be None when
    ``config.single_scale`` selects the other. ``info`` (what the models are) goes into every report.
    Build one with :func:`samsem.runtime.load.load_pipeline`.
    """

    def __init__(
        self,
        model1: Segmenter | None,
        model2: Segmenter | None,
        config: PipelineConfig | None = None,
        info: ModelInfo | None = None,
    ) -> None:
        self.config = config or PipelineConfig()
        scale = self.config.single_scale
        if scale != 2 and model1 is None:
            raise SamsemError("model 1 is required unless single_scale == 2")
        if scale != 1 and model2 is None:
            raise SamsemError("model 2 is required unless single_scale == 1")
        self.model1 = model1
        self.model2 = model2
        self.info = info

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
    ) -> Iterator[SegmentResult | FailedImage]:
        """Segment a stream of images, batching model inputs across them.

        sources: (name, loader) pairs; a loader returns (H, W) uint8/uint16 and may raise
        :class:`SamsemError`, which yields a :class:`FailedImage` instead of stopping the run.
        ``progress(n)`` is called with the number of model inputs finished after every batch.
        Results come in input order.
        """
        jobs: list[_Job | FailedImage] = []
        batch: list[_Item] = []
        for name, load in sources:
            try:
                job = self._open(name, load)
            except SamsemError as exc:
                jobs.append(FailedImage(name, exc))
                yield from self._pop_finished(jobs)
                continue
            jobs.append(job)
            for item in self._items(job):
                if batch and self._segmenter(batch[0]) is not self._segmenter(item):
                    self._run_batch(batch, progress)
                    batch = []
                batch.append(item)
                if len(batch) == self.config.batch_size:
                    self._run_batch(batch, progress)
                    batch = []
                    yield from self._pop_finished(jobs)
        if batch:
            self._run_batch(batch, progress)
        yield from self._pop_finished(jobs)

    def count_inputs(self, height: int, width: int) -> int:
        """Number of model inputs an image of this size needs (for progress bars)."""
        return self._n_inputs(make_tiling(height, width, self.config.tiling))

    def _n_inputs(self, tiling: Tiling) -> int:
        """Model inputs of an image with this tiling: its patches (scale 2) and the whole image (scale 1)."""
        scale = self.config.single_scale
        return (0 if scale == 1 else len(tiling)) + (0 if scale == 2 else 1)

    # ------------------------------------------------------------------ internals
    def _segmenter(self, item: _Item) -> Segmenter:
        return self.model1 if item.scale == 1 else self.model2  # type: ignore[return-value]

    def _open(self, name: str, load: ImageLoader) -> _Job:
        t0 = time.perf_counter()
        raw = load()
        if raw.ndim != 2 or raw.size == 0:
            raise SamsemError(f"{name}: expected a non-empty (H, W) grayscale image, got shape {raw.shape}")
        cfg = self.config
        job = _Job(
            name=name,
            raw=raw,
            levels=intensity_range(raw, cfg.low_pct, cfg.high_pct),
            tiling=make_tiling(raw.shape[0], raw.shape[1], cfg.tiling),
            out=np.zeros(raw.shape, np.uint8),
        )
        job.pending = self._n_inputs(job.tiling)
        job.add_time("read", time.perf_counter() - t0)
        return job

    def _items(self, job: _Job) -> Iterator[_Item]:
        """Model inputs of one image, produced lazily so only a batch's worth exists at a time."""
        if self.config.single_scale != 2:
            t0 = time.perf_counter()
            small = resize_square(job.raw, self.model1.input_size)  # type: ignore[union-attr]
            img = apply_range(small, job.levels)
            job.add_time("prepare", time.perf_counter() - t0)
            yield _Item(job, 1, -1, img)
        if self.config.single_scale != 1:
            patch = job.tiling.patch
            for index, box in enumerate(job.tiling.boxes):
                t0 = time.perf_counter()
                crop = extract_patch(job.raw, box, patch, pad_value=job.levels[0])
                img = resize_square(apply_range(crop, job.levels), self.model2.input_size)  # type: ignore[union-attr]
                job.add_time("prepare", time.perf_counter() - t0)
                yield _Item(job, 2, index, img)

    def _predict(self, items: list[_Item]) -> tuple[np.ndarray, np.ndarray]:
        """Run the batch's segmenter; inputs without prompt candidates are empty with score 0."""
        seg = self._segmenter(items[0])
        images = np.stack([it.image for it in items])
        probs_out: list[np.ndarray | None] = [None] * len(items)
        scores = np.zeros(len(items), np.float32)
        if seg.uses_prompts:
            seeds = [(self.config.seed, it.scale, it.index + 1) for it in items]
            points, has_fg = make_prompts(images, self.config.prompts, seeds)
        else:
            points, has_fg = None, np.ones(len(items), bool)
        run = np.flatnonzero(has_fg)
        if run.size:
            probs, sc = seg.predict(images[run], None if points is None else points[run])
            for k, i in enumerate(run):
                probs_out[i] = probs[k]
                scores[i] = sc[k]
        shape = probs_out[run[0]].shape if run.size else (seg.input_size, seg.input_size)
        for i in np.flatnonzero(~has_fg):
            probs_out[i] = np.zeros(shape, np.float32)
        return np.stack(probs_out), scores  # type: ignore[arg-type]

    def _run_batch(self, batch: list[_Item], progress: Callable[[int], None] | None) -> None:
        t0 = time.perf_counter()
        probs, scores = self._predict(batch)
        share = (time.perf_counter() - t0) / len(batch)
        for it in batch:
            it.job.add_time(f"model{it.scale}", share)
        # model-1 outputs first: a job's patches may share this batch with its whole-image input
        for it, prob, score in zip(batch, probs, scores, strict=True):
            if it.scale == 1:
                it.job.prob1, it.job.score1 = prob, float(score)
                it.job.pending -= 1
                if self.config.single_scale == 1:
                    self._fill_from_model1(it.job)
        patches = [
            (it, prob, float(score))
            for it, prob, score in zip(batch, probs, scores, strict=True)
            if it.scale == 2
        ]
        if patches:
            self._decide_and_paste(patches)
        if progress is not None:
            progress(len(batch))

    def _fill_from_model1(self, job: _Job) -> None:
        t0 = time.perf_counter()
        for index, (box, owned) in enumerate(zip(job.tiling.boxes, job.tiling.owned, strict=True)):
            m1 = (resize_region(job.model1_prob, job.out.shape, owned) >= self.config.threshold).astype(
                np.uint8
            )
            job.out[owned[0] : owned[2], owned[1] : owned[3]] = m1
            job.patches.append(PatchRecord(index, _box(box), "model1", score=job.score1))
        job.add_time("stitch", time.perf_counter() - t0)

    def _decide_and_paste(self, patches: list[tuple[_Item, np.ndarray, float]]) -> None:
        cfg = self.config
        p = patches[0][0].job.tiling.patch
        t0 = time.perf_counter()
        m2 = np.zeros((len(patches), p, p), np.uint8)
        m1 = np.zeros_like(m2)
        valid = np.zeros((len(patches), p, p), bool)
        for k, (it, prob, _) in enumerate(patches):
            job = it.job
            box = job.tiling.boxes[it.index]
            bh, bw = int(box[2] - box[0]), int(box[3] - box[1])
            valid[k, :bh, :bw] = True
            m2[k] = cv2.resize(prob, (p, p), interpolation=cv2.INTER_LINEAR) >= cfg.threshold
            if cfg.single_scale is None:
                m1[k, :bh, :bw] = resize_region(job.model1_prob, job.out.shape, box) >= cfg.threshold
        if cfg.single_scale is None:
            side1 = self.model1.input_size  # type: ignore[union-attr]
            scale1 = np.array([max(it.job.raw.shape) / side1 for it, _, _ in patches])
            dec = decide(m1, m2, cfg.decision, valid, scale1)
        t1 = time.perf_counter()
        for k, (it, _, score) in enumerate(patches):
            job = it.job
            box = job.tiling.boxes[it.index]
            owned = job.tiling.owned[it.index]
            bh, bw = int(box[2] - box[0]), int(box[3] - box[1])
            if cfg.single_scale is None:
                source = Source(int(dec.source[k]))
                chosen = {Source.MODEL1: dec.mask1[k], Source.MODEL2: dec.mask2[k]}.get(source)
                if chosen is None:
                    chosen = self._fallback(job, box, p)
                rec = PatchRecord(
                    it.index,
                    _box(box),
                    source.name.lower(),
                    Reason(int(dec.reason[k])).name.lower(),
                    int(dec.speckles1[k]),
                    int(dec.speckles2[k]),
                    float(dec.agreement[k]),
                    score,
                    bool(dec.flagged[k]),
                )
            else:
                chosen = m2[k]
                rec = PatchRecord(it.index, _box(box), "model2", score=score)
            paste_owned(job.out, chosen[:bh, :bw], box, owned)
            job.patches.append(rec)
            job.pending -= 1
        share = (time.perf_counter() - t1) / len(patches)
        dshare = (t1 - t0) / len(patches)
        for it, _, _ in patches:
            it.job.add_time("decide", dshare)
            it.job.add_time("stitch", share)

    def _fallback(self, job: _Job, box: np.ndarray, patch: int) -> np.ndarray:
        """Sauvola on the patch at full resolution: (patch, patch) uint8 {0, 1}."""
        crop = extract_patch(job.raw, box, patch, pad_value=job.levels[0])
        return classical_segment(apply_range(crop, job.levels), self.config.fallback)

    def _pop_finished(self, jobs: list[_Job | FailedImage]) -> Iterator[SegmentResult | FailedImage]:
        while jobs and (isinstance(jobs[0], FailedImage) or jobs[0].pending == 0):
            job = jobs.pop(0)
            yield job if isinstance(job, FailedImage) else self._result(job)

    def _result(self, job: _Job) -> SegmentResult:
        cfg = self.config
        t0 = time.perf_counter()
        clean_mask(job.out, cfg.postprocess)
        job.add_time("postprocess", time.perf_counter() - t0)
        report = ImageReport(
            name=job.name,
            height=int(job.raw.shape[0]),
            width=int(job.raw.shape[1]),
            dtype=str(job.raw.dtype),
            intensity_levels=job.levels,
            model=self.info,
            config=cfg.to_dict(),
            mode="two-scale" if cfg.single_scale is None else f"single-scale {cfg.single_scale}",
            model1_score=job.score1,
            patches=tuple(sorted(job.patches, key=lambda r: r.index)),
            foreground_fraction=float(job.out.mean()),
            timings_s=dict(job.timings),
        )
        return SegmentResult(job.name, job.raw, job.out, report)


def _box(box: np.ndarray) -> tuple[int, int, int, int]:
    y0, x0, y1, x1 = (int(v) for v in box)
    return y0, x0, y1, x1
