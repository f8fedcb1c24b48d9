"""The ``samsem.v1.Segmentation`` servicer (grpc.aio): uploads, admission, pipeline in worker threads.

Each call gets a request id (the client's ``x-request-id`` metadata or a new one), returned in the
initial metadata, the report and every log line. Errors map to status codes in :func:`_status`:
bad input -> INVALID_ARGUMENT, full server -> RESOURCE_EXHAUSTED (with ``retry-after-ms`` trailing
metadata), paths outside the roots -> PERMISSION_DENIED, expired deadline -> DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NoReturn

import grpc
import numpy as np

from samsem import __version__
from samsem.errors import InputError, SamsemError
from samsem.runtime.pipeline import Pipeline, SegmentResult
from samsem.server import samsem_pb2 as pb
from samsem.server import samsem_pb2_grpc as pb_grpc
from samsem.server.admission import Admission, Busy, Slot
from samsem.server.batching import Cancelled, Ticket
from samsem.server.codec import (
    EncodedAssembler,
    ImageSpec,
    RawAssembler,
    check_size,
    compress_range,
    decode_file,
    decoded_info,
    parse_header,
)
from samsem.server.engine import Engine
from samsem.server.jobs import JobManager, JobsDisabled, PathRefused
from samsem.server.observability import Metrics, log

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


@dataclass(frozen=True)
class Limits:
    """Sizes the service enforces (see ServerConfig)."""

    chunk_bytes: int
    max_image_pixels: int
    max_tile_pixels: int
    max_encoded_bytes: int
    tmp_dir: str | None = None


@dataclass(frozen=True)
class ModelFacts:
    """Backend, device and precision the server was asked for (GetModelInfo prefers what the model's
    description says it actually runs on)."""

    backend: str
    device: str
    precision: str


class _Abort(Exception):
    """Finish the call with this status."""

    def __init__(self, code: grpc.StatusCode, details: str, retry_after_s: float | None = None) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.retry_after_s = retry_after_s


def _status(exc: BaseException) -> _Abort | None:
    """The status an exception ends a call with (None: unexpected, an INTERNAL error)."""
    if isinstance(exc, _Abort):
        return exc
    if isinstance(exc, Busy):
        return _Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc), exc.retry_after_s)
    if isinstance(exc, PathRefused):
        return _Abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
    if isinstance(exc, JobsDisabled):
        return _Abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    if isinstance(exc, SamsemError):
        return _Abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, Cancelled):
        code = (
            grpc.StatusCode.DEADLINE_EXCEEDED
            if exc.reason == "deadline exceeded"
            else grpc.StatusCode.CANCELLED
        )
        if exc.reason == "server shutting down":
            code = grpc.StatusCode.UNAVAILABLE
        return _Abort(code, exc.reason)
    return None


@dataclass
class _Held:
    """What a call holds while it runs (released by Servicer._serving)."""

    slot: Slot | None = None


class _Call:
    """Bookkeeping of one RPC: request id, timing, final status, metrics and the log line."""

    def __init__(self, method: str, context: grpc.aio.ServicerContext, metrics: Metrics) -> None:
        self.method = method
        self.context = context
        self.metrics = metrics
        given = dict(context.invocation_metadata() or ()).get("x-request-id", "")
        self.request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex[:16]
        self.t0 = time.monotonic()
        remaining = context.time_remaining()
        self.ticket = Ticket(None if remaining is None else time.monotonic() + remaining)
        self.fields: dict = {}

    async def begin(self) -> None:
        await self.context.send_initial_metadata((("x-request-id", self.request_id),))

    def finish(self, code: grpc.StatusCode, details: str = "") -> None:
        self.metrics.requests.labels(self.method, code.name).inc()
        level = logging.INFO if code in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED) else logging.WARNING
        log(
            level,
            f"{self.method} {code.name}",
            request_id=self.request_id,
            method=self.method,
            code=code.name,
            details=details,
            duration_s=round(time.monotonic() - self.t0, 4),
            **self.fields,
        )

    async def fail(self, exc: BaseException) -> NoReturn:
        """End the call for ``exc`` (aborting it with the mapped status)."""
        status = _status(exc)
        if status is None:
            log(logging.ERROR, "internal error", request_id=self.request_id, method=self.method, exc_info=exc)
            status = _Abort(grpc.StatusCode.INTERNAL, f"internal error (request id {self.request_id})")
        self.finish(status.code, status.details)
        trailing: tuple[tuple[str, str], ...] = ()
        if status.retry_after_s is not None:
            trailing = (("retry-after-ms", str(int(status.retry_after_s * 1000))),)
        await self.context.abort(status.code, status.details, trailing_metadata=trailing)
        raise RuntimeError("context.abort returned")  # it raises; this tells the type checker


class SegmentationService(pb_grpc.SegmentationServicer):
    """Implements every RPC of ``samsem.v1.Segmentation``."""

    def __init__(
        self,
        engine: Engine,
        admission: Admission,
        jobs: JobManager,
        metrics: Metrics,
        limits: Limits,
        facts: ModelFacts,
        executor: ThreadPoolExecutor,
    ) -> None:
        self.engine = engine
        self.admission = admission
        self.jobs = jobs
        self.metrics = metrics
        self.limits = limits
        self.facts = facts
        self.executor = executor

    @contextlib.asynccontextmanager
    async def _serving(self, call: _Call) -> AsyncIterator[_Held]:
        """Run a call's body: OK when it ends normally, CANCELLED or the mapped error status otherwise;
        the ticket is cancelled and an admitted slot released however it ends."""
        held = _Held()
        try:
            yield held
            call.finish(grpc.StatusCode.OK)
        except asyncio.CancelledError:
            call.ticket.cancel()
            call.finish(grpc.StatusCode.CANCELLED, "client cancelled or deadline passed")
            raise
        except Exception as exc:
            await call.fail(exc)
        finally:
            call.ticket.cancel("call ended")
            if held.slot is not None:
                held.slot.release()
            self._gauge()

    # ------------------------------------------------------------------ Segment (streaming)
    async def Segment(self, request_iterator, context) -> AsyncIterator[pb.SegmentResponse]:
        call = _Call("Segment", context, self.metrics)
        await call.begin()
        async with self._serving(call) as held:
            stream = request_iterator.__aiter__()
            try:
                first = await stream.__anext__()
            except StopAsyncIteration:
                raise InputError(None, "empty request stream", "a header message first") from None
            if first.WhichOneof("part") != "header":
                raise InputError(None, "the first message must be the header", "header, then chunks")
            spec = parse_header(first.header, self.limits.max_image_pixels, self.limits.max_encoded_bytes)
            pipeline = self.engine.pipeline(first.header.options)
            call.fields.update(name=spec.name, bytes=spec.nbytes)
            held.slot = self.admission.admit(_buffer_bytes(spec))
            self._gauge()
            image = await self._receive(
                spec, stream, held.slot, self.limits.chunk_bytes, self.limits.max_image_pixels
            )
            async for msg in self._run(call, pipeline, spec.name, image, held.slot, self.limits.chunk_bytes):
                yield msg

    async def _receive(
        self, spec: ImageSpec, stream, slot: Slot, max_chunk: int, max_pixels: int
    ) -> np.ndarray:
        """Read the chunks into a preallocated array (raw) or a spooled file (encoded); return the image."""
        asm = RawAssembler(spec) if spec.kind == "raw" else EncodedAssembler(spec, self.limits.tmp_dir)
        try:
            async for msg in stream:
                if msg.WhichOneof("part") != "chunk":
                    raise InputError(
                        None, "a second header after the image bytes started", "only chunks after the header"
                    )
                if len(msg.chunk) > max_chunk:
                    raise InputError(
                        None, f"chunk of {len(msg.chunk)} bytes exceeds the limit of {max_chunk}"
                    )
                asm.add(msg.chunk)
            if isinstance(asm, RawAssembler):
                return asm.finish()
            asm.complete()
            h, w, nbytes = await asyncio.to_thread(decoded_info, asm.path, spec.format)
            check_size(h, w, max_pixels)
            slot.reserve(nbytes)
            return await asyncio.to_thread(decode_file, asm.path, spec.format, max_pixels)
        finally:
            asm.close()

    async def _run(
        self, call: _Call, pipeline: Pipeline, name: str, image: np.ndarray, slot: Slot, chunk_pixels: int
    ) -> AsyncIterator[pb.SegmentResponse]:
        """Progress messages while the pipeline runs, then the mask in chunks and the report."""
        total = pipeline.count_inputs(*image.shape)
        waited = await slot.start()
        self._gauge()
        self.metrics.queue_seconds.observe(waited)
        yield pb.SegmentResponse(progress=pb.Progress(tiles_done=0, tiles_total=total))
        updates: asyncio.Queue[int | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def progress(n: int) -> None:
            loop.call_soon_threadsafe(updates.put_nowait, n)

        future = self._compute(call, pipeline, name, image, slot, progress)
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(updates.put_nowait, None))
        done = 0
        while (n := await updates.get()) is not None:
            done += n
            yield pb.SegmentResponse(progress=pb.Progress(tiles_done=done, tiles_total=total))
        result, compute_s = await future
        h, w = result.mask.shape
        for offset in range(0, h * w, chunk_pixels):
            length = min(chunk_pixels, h * w - offset)
            data = await asyncio.to_thread(compress_range, result.mask, offset, length)
            yield pb.SegmentResponse(
                mask=pb.MaskChunk(height=h, width=w, offset=offset, length=length, zlib_data=data)
            )
        yield pb.SegmentResponse(report=self._report(call, result, waited, compute_s))

    def _compute(
        self,
        call: _Call,
        pipeline: Pipeline,
        name: str,
        image: np.ndarray,
        slot: Slot,
        progress: Callable[[int], None],
    ) -> asyncio.Future:
        """Run the pipeline in a worker thread; the slot is released when the thread is done."""
        ticket = call.ticket

        def work() -> tuple[SegmentResult, float]:
            t0 = time.perf_counter()

            def step(n: int) -> None:
                progress(n)
                ticket.check()

            with self.engine.session(ticket):
                ticket.check()
                (result,) = pipeline.segment_many([(name, lambda: image)], progress=step)
            if not isinstance(result, SegmentResult):
                raise result.error
            return result, time.perf_counter() - t0

        slot.hold()
        future = asyncio.get_running_loop().run_in_executor(self.executor, work)

        def done(_: asyncio.Future) -> None:
            slot.release()
            self._gauge()

        future.add_done_callback(done)
        return future

    def _report(
        self, call: _Call, result: SegmentResult, waited: float, compute_s: float
    ) -> pb.SegmentReport:
        self.metrics.compute_seconds.observe(compute_s)
        call.fields.update(
            queue_s=round(waited, 4), compute_s=round(compute_s, 4), tiles=len(result.report.patches)
        )
        report = {**result.report.to_json(), "request_id": call.request_id}
        return pb.SegmentReport(
            name=result.name,
            height=result.mask.shape[0],
            width=result.mask.shape[1],
            report_json=json.dumps(report, default=_json_default),
            request_id=call.request_id,
            queue_seconds=waited,
            compute_seconds=compute_s,
        )

    # ------------------------------------------------------------------ SegmentTile (unary)
    async def SegmentTile(self, request, context) -> pb.SegmentTileResponse:
        call = _Call("SegmentTile", context, self.metrics)
        await call.begin()
        async with self._serving(call) as held:
            if not request.HasField("header"):
                raise InputError(None, "the request has no header")
            spec = parse_header(request.header, self.limits.max_tile_pixels, self.limits.max_encoded_bytes)
            pipeline = self.engine.pipeline(request.header.options)
            held.slot = self.admission.admit(_buffer_bytes(spec))
            self._gauge()
            tile_px = self.limits.max_tile_pixels
            image = await self._receive(spec, _one_chunk(request.data), held.slot, len(request.data), tile_px)
            mask = None
            report = None
            async for msg in self._run(call, pipeline, spec.name, image, held.slot, image.size):
                if msg.HasField("report"):
                    report = msg.report
                elif msg.HasField("mask"):
                    mask = msg.mask
            return pb.SegmentTileResponse(mask=mask, report=report)

    # ------------------------------------------------------------------ jobs
    async def SubmitJob(self, request, context) -> pb.Job:
        call = _Call("SubmitJob", context, self.metrics)
        await call.begin()
        try:
            job = await self.jobs.submit(list(request.inputs), dict(request.options), request.overwrite)
            call.fields.update(job_id=job.job_id, files=len(job.files))
            call.finish(grpc.StatusCode.OK)
            return job
        except Exception as exc:
            await call.fail(exc)

    async def GetJob(self, request, context) -> pb.Job:
        call = _Call("GetJob", context, self.metrics)
        await call.begin()
        try:
            job = self.jobs.get(request.job_id)
            call.finish(grpc.StatusCode.OK)
            return job
        except Exception as exc:
            await call.fail(_job_error(exc, request.job_id))

    async def CancelJob(self, request, context) -> pb.Job:
        call = _Call("CancelJob", context, self.metrics)
        await call.begin()
        try:
            job = self.jobs.cancel(request.job_id)
            call.finish(grpc.StatusCode.OK)
            return job
        except Exception as exc:
            await call.fail(_job_error(exc, request.job_id))

    async def WatchJob(self, request, context) -> AsyncIterator[pb.Job]:
        call = _Call("WatchJob", context, self.metrics)
        await call.begin()
        try:
            async for snap in self.jobs.watch(request.job_id):
                yield snap
            call.finish(grpc.StatusCode.OK)
        except asyncio.CancelledError:
            call.finish(grpc.StatusCode.CANCELLED)
            raise
        except Exception as exc:
            await call.fail(_job_error(exc, request.job_id))

    # ------------------------------------------------------------------ info
    async def GetModelInfo(self, request, context) -> pb.ModelInfo:
        call = _Call("GetModelInfo", context, self.metrics)
        await call.begin()
        e = self.engine
        model = e.info.to_json() if e.info is not None else {}
        info = pb.ModelInfo(
            manifest_json=json.dumps(model, default=_json_default),
            backend=str(model.get("backend", self.facts.backend)),
            device=str(model.get("device", self.facts.device)),
            precision=str(model.get("precision", self.facts.precision)),
            max_batch_size=e.max_batch,
            request_batch_size=e.config.batch_size,
            max_queue_delay_seconds=e.max_delay_s,
            config_json=json.dumps(e.config.to_dict(), default=_json_default),
            chunk_bytes=self.limits.chunk_bytes,
            max_image_pixels=self.limits.max_image_pixels,
            max_tile_pixels=self.limits.max_tile_pixels,
            version=__version__,
        )
        call.finish(grpc.StatusCode.OK)
        return info

    def _gauge(self) -> None:
        self.metrics.queue_depth.set(self.admission.waiting)
        self.metrics.active.set(self.admission.active)


def _buffer_bytes(spec: ImageSpec) -> int:
    """Server memory a request's image and mask take (encoded images: reserved once decoded)."""
    if spec.kind != "raw":
        return 0
    return spec.nbytes + spec.height * spec.width


async def _one_chunk(data: bytes):
    """The unary request's bytes as a one-chunk stream of SegmentRequest messages."""
    yield pb.SegmentRequest(chunk=data)


def _job_error(exc: Exception, job_id: str) -> Exception:
    if isinstance(exc, KeyError):
        return _Abort(grpc.StatusCode.NOT_FOUND, f"no job {job_id!r} (unknown or expired)")
    return exc


def _json_default(obj):
    if isinstance(obj, np.ndarray | np.generic):
        return obj.tolist()
    return str(obj)
