"""The ``samsem.v1.Segmentation`` servicer (grpc.aio): uploads, admission, pipeline in worker threads.

Each call gets a request id (the client's ``x-request-id`` metadata or a new one), returned in the
initial metadata, the report and every log line. Errors map to status codes in :func:`error_status`:
bad input -> INVALID_ARGUMENT, full server -> RESOURCE_EXHAUSTED (with ``retry-after-ms`` trailing
metadata; only for what can succeed later), paths outside the roots -> PERMISSION_DENIED, expired
deadline or a stalled upload -> DEADLINE_EXCEEDED, jobs on a server without job roots ->
FAILED_PRECONDITION. User input echoed in an error message is clipped, and every message is capped
at :data:`MAX_DETAILS` characters.

What a request will cost is checked before any work: the image's pixels and model inputs (cost follows
the inputs, which grow with the aspect ratio), that the memory its buffers need and the spool bytes of
an encoded upload could fit at all (for encoded files as soon as the size is known: at once for PNG,
at the end for TIFF). Memory and spool bytes are then reserved as the upload's bytes arrive and the
rest once it is complete, so a slow upload holds only what it has sent. Replies never exceed the
message limit: the mask, vector files and a large report are sent in pieces of at most
``chunk_bytes``. Uploads must keep moving: at most ``upload_idle_s`` between messages and at least
``upload_min_rate`` bytes/s overall (after a first ``upload_idle_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import json
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
import numpy as np

from samsem import __version__
from samsem.errors import EngineError, InputError, SamsemError
from samsem.runtime.pipeline import Pipeline, SegmentResult
from samsem.server import samsem_pb2 as pb
from samsem.server import samsem_pb2_grpc as pb_grpc
from samsem.server.admission import Admission, Busy, Slot
from samsem.server.batching import Cancelled, Ticket
from samsem.server.codec import (
    MAX_NAME_BYTES,
    EncodedAssembler,
    ImageSpec,
    RawAssembler,
    check_inputs,
    check_size,
    compress_range,
    decode_file,
    decoded_info,
    file_pieces,
    parse_header,
    vector_options,
)
from samsem.server.confine import PathRefused, clip
from samsem.server.engine import Engine
from samsem.server.jobs import JobManager, JobsDisabled, StoreUnavailable
from samsem.server.observability import Metrics, log
from samsem.server.spool import Spool

if TYPE_CHECKING:
    from samsem.vector import VectorOptions

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
MAX_DETAILS = 1000  # longest status message (the trailing metadata must stay far below 8 KiB)
VECTOR_BYTES_PER_PIXEL = 10  # memory vectorizing a mask may take (measured: 9.3 B/px on a noisy mask)
LIST_JOBS_DEFAULT = 100


@dataclass(frozen=True)
class Limits:
    """Sizes the service enforces (see ServerConfig)."""

    chunk_bytes: int
    max_image_pixels: int
    max_tile_pixels: int
    max_encoded_bytes: int
    max_inputs: int  # model inputs per Segment request
    max_tile_inputs: int  # model inputs per SegmentTile request
    upload_idle_s: float = 30.0
    upload_min_rate: float = 1 << 20  # bytes/s


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


# what an OS error says about the request (a path it names, or the room the server has left)
_OS_CODES: dict[int, grpc.StatusCode] = {
    **dict.fromkeys(
        (errno.ENAMETOOLONG, errno.ELOOP, errno.ENOTDIR, errno.EISDIR, errno.EINVAL, errno.ENXIO),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    errno.ENOENT: grpc.StatusCode.NOT_FOUND,
    **dict.fromkeys((errno.EACCES, errno.EPERM, errno.EROFS), grpc.StatusCode.PERMISSION_DENIED),
    **dict.fromkeys((errno.ENOSPC, errno.EDQUOT, errno.EFBIG), grpc.StatusCode.RESOURCE_EXHAUSTED),
}


def error_status(exc: BaseException) -> _Abort | None:
    """The status an exception ends a call with (None: unexpected, an INTERNAL error). An OS error is
    answered by its errno, with the system's reason and never the server's own path."""
    if isinstance(exc, _Abort):
        return exc
    if isinstance(exc, OSError) and exc.errno in _OS_CODES:
        what = "server out of space" if _OS_CODES[exc.errno] == grpc.StatusCode.RESOURCE_EXHAUSTED else "path"
        return _Abort(_OS_CODES[exc.errno], f"{what}: {os.strerror(exc.errno)}")
    if isinstance(exc, Busy):
        return _Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc), exc.retry_after_s)
    if isinstance(exc, PathRefused):
        return _Abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
    if isinstance(exc, JobsDisabled):
        return _Abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    if isinstance(exc, StoreUnavailable):
        return _Abort(grpc.StatusCode.UNAVAILABLE, str(exc), exc.retry_after_s)
    if isinstance(exc, EngineError):  # the model failed, not the request
        return _Abort(grpc.StatusCode.INTERNAL, str(exc))
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
        self.deadline = None if remaining is None else time.monotonic() + remaining
        self.ticket = Ticket(self.deadline)
        self.peer = peer_address(context.peer() or "")
        self.fields: dict = {}

    def ended_code(self) -> grpc.StatusCode:
        """The code of a call that ended without an answer: its deadline passed, or the client left."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED

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
            peer=self.peer,
            duration_s=round(time.monotonic() - self.t0, 4),
            **self.fields,
        )

    async def fail(self, exc: BaseException) -> NoReturn:
        """End the call for ``exc`` (aborting it with the mapped status). A call whose deadline has
        passed or whose client has left is recorded as such, whatever error that caused (a request
        stream that ends early reads as a truncated upload)."""
        status = error_status(exc)
        gone = self.ended_code()
        if gone == grpc.StatusCode.DEADLINE_EXCEEDED or self.context.cancelled():
            status = _Abort(
                gone, "deadline passed" if gone == grpc.StatusCode.DEADLINE_EXCEEDED else "client left"
            )
        if status is None:
            log(logging.ERROR, "internal error", request_id=self.request_id, method=self.method, exc_info=exc)
            status = _Abort(grpc.StatusCode.INTERNAL, f"internal error (request id {self.request_id})")
        details = clip(status.details, MAX_DETAILS)
        self.finish(status.code, details)
        trailing: tuple[tuple[str, str], ...] = ()
        if status.retry_after_s is not None:
            trailing = (("retry-after-ms", str(int(status.retry_after_s * 1000))),)
        await self.context.abort(status.code, details, trailing_metadata=trailing)
        raise RuntimeError("context.abort returned")  # it raises; this tells the type checker


def _unary(method: str, names_job: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The bookkeeping of a unary RPC around its body ``body(self, request, call)``: the call begins,
    ends OK with the body's answer or fails with its error mapped (``names_job``: a KeyError is the
    request's unknown job, NOT_FOUND)."""

    def wrap(body: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(body)
        async def rpc(self: SegmentationService, request: Any, context: grpc.aio.ServicerContext) -> Any:
            call = _Call(method, context, self.metrics)
            await call.begin()
            try:
                answer = await body(self, request, call)
                call.finish(grpc.StatusCode.OK)
                return answer
            except Exception as exc:
                await call.fail(_job_error(exc, request.job_id) if names_job else exc)

        return rpc

    return wrap


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
        spool: Spool,
    ) -> None:
        self.spool = spool
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
            code = call.ended_code()
            call.finish(
                code, "deadline passed" if code == grpc.StatusCode.DEADLINE_EXCEEDED else "client left"
            )
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
                first = await asyncio.wait_for(stream.__anext__(), self.limits.upload_idle_s)
            except StopAsyncIteration:
                raise InputError(None, "empty request stream", "a header message first") from None
            except TimeoutError:
                raise _stalled(self.limits.upload_idle_s) from None
            if first.WhichOneof("part") != "header":
                raise InputError(None, "the first message must be the header", "header, then chunks")
            lim = self.limits
            spec = parse_header(first.header, lim.max_image_pixels, lim.max_encoded_bytes)
            vector = vector_options(first.header.vector)
            pipeline = self.engine.pipeline(first.header.options)
            call.fields.update(name=clip(spec.name, 100), bytes=spec.nbytes)
            if spec.kind == "raw":
                self._check_decoded(
                    spec.height, spec.width, lim.max_image_pixels, pipeline, lim.max_inputs, vector
                )
            held.slot = self._admit(spec, vector, call.peer)
            image = await self._receive(
                spec,
                stream,
                held.slot,
                pipeline,
                (lim.max_image_pixels, lim.max_inputs, lim.chunk_bytes),
                vector,
            )
            async for msg in self._run(call, pipeline, spec.name, image, held.slot, vector):
                yield msg

    def _admit(self, spec: ImageSpec, vector: VectorOptions | None, peer: str) -> Slot:
        """Admit a request whose header is ``spec`` (nothing reserved yet): refused at once when its
        buffers or its spooled file could never fit (InputError) or the server or this client address
        is full (Busy)."""
        self.admission.fits(_buffer_bytes(spec, vector))
        if spec.kind == "encoded":
            self.spool.fits(spec.nbytes)
        slot = self.admission.admit(0, peer, spec.nbytes)
        self._gauge()
        return slot

    async def _receive(
        self,
        spec: ImageSpec,
        stream,
        slot: Slot,
        pipeline: Pipeline,
        bounds: tuple[int, int, int],
        vector: VectorOptions | None,
    ) -> np.ndarray:
        """Read the chunks into a preallocated array (raw) or a spooled file (encoded); return the image.

        Memory (raw) and spool bytes (encoded) are reserved as the bytes arrive, the rest of what the
        request needs (mask, decoding, vectors) once the upload is complete: a slow upload holds only
        what it has sent. bounds: (max pixels, max model inputs, max chunk bytes). Every message must
        come within ``upload_idle_s``, and after a first ``upload_idle_s`` the bytes received must keep
        up with ``upload_min_rate`` from the start (at ``t`` s, ``(t - upload_idle_s) * rate`` bytes):
        DEADLINE_EXCEEDED otherwise, which frees the slot."""
        lim = self.limits
        max_pixels, max_inputs, max_chunk = bounds
        asm = RawAssembler(spec) if spec.kind == "raw" else EncodedAssembler(spec, self.spool.dir)
        spooled = 0
        start = time.monotonic() + lim.upload_idle_s

        def behind() -> float:
            """Seconds the upload is behind the minimum rate (> 0: too slow)."""
            return time.monotonic() - (start + asm.received / lim.upload_min_rate)

        try:
            while True:
                done = asm.received >= spec.nbytes  # then only the end of the stream is missing
                wait = lim.upload_idle_s if done else min(lim.upload_idle_s, -behind())
                try:
                    msg = await asyncio.wait_for(stream.__anext__(), max(wait, 0.0))
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise _stalled(lim.upload_idle_s, slow=behind() >= 0) from None
                if msg.WhichOneof("part") != "chunk":
                    raise InputError(
                        None, "a second header after the image bytes started", "only chunks after the header"
                    )
                if len(msg.chunk) > max_chunk:
                    raise InputError(
                        None, f"chunk of {len(msg.chunk)} bytes exceeds the limit of {max_chunk}"
                    )
                if isinstance(asm, RawAssembler):
                    slot.reserve(min(len(msg.chunk), spec.nbytes - asm.received))
                else:
                    self.spool.reserve(len(msg.chunk))
                    spooled += len(msg.chunk)
                checked = isinstance(asm, EncodedAssembler) and asm.png_size is not None
                asm.add(msg.chunk)
                if isinstance(asm, EncodedAssembler) and asm.png_size is not None and not checked:
                    h, w, need = asm.png_size  # refused now if it could never be served
                    self._check_decoded(h, w, max_pixels, pipeline, max_inputs, vector)
                    self.admission.fits(need + _vector_bytes(h, w, vector))
                if behind() > 0:  # messages keep coming, but too few bytes
                    raise _stalled(lim.upload_idle_s, slow=True)
            if isinstance(asm, RawAssembler):
                image = asm.finish()
                slot.reserve(_buffer_bytes(spec, vector) - slot.nbytes)
                return image
            asm.complete()
            h, w, need = await asyncio.to_thread(decoded_info, asm.path, spec.format)
            self._check_decoded(h, w, max_pixels, pipeline, max_inputs, vector)
            slot.reserve(need + _vector_bytes(h, w, vector))
            return await asyncio.to_thread(decode_file, asm.path, spec.format, max_pixels)
        finally:
            asm.close()
            self.spool.release(spooled)

    @staticmethod
    def _check_decoded(
        h: int, w: int, max_pixels: int, pipeline: Pipeline, max_inputs: int, vector: VectorOptions | None
    ) -> None:
        """Refuse an image of h x w before any work: pixels, model inputs, vector files it cannot have."""
        check_size(h, w, max_pixels)
        check_inputs(h, w, pipeline.count_inputs(h, w), max_inputs)
        if vector is not None:
            vector.check_size(h, w)

    async def _run(
        self,
        call: _Call,
        pipeline: Pipeline,
        name: str,
        image: np.ndarray,
        slot: Slot,
        vector: VectorOptions | None,
        chunk_pixels: int | None = None,
    ) -> AsyncIterator[pb.SegmentResponse]:
        """Progress messages while the pipeline runs, then the mask in chunks, the vector files in
        pieces, a large report in pieces, and the report."""
        chunk = self.limits.chunk_bytes
        total = pipeline.count_inputs(*image.shape)
        waited = await slot.start()
        self._gauge()
        self.metrics.queue_seconds.observe(waited)
        yield pb.SegmentResponse(progress=pb.Progress(tiles_done=0, tiles_total=total))
        updates: asyncio.Queue[int | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def progress(n: int) -> None:
            loop.call_soon_threadsafe(updates.put_nowait, n)

        with self.spool.folder() as folder:
            future = self._compute(call, pipeline, name, image, slot, progress, vector, folder)
            future.add_done_callback(lambda _: loop.call_soon_threadsafe(updates.put_nowait, None))
            done = 0
            while (n := await updates.get()) is not None:
                done += n
                yield pb.SegmentResponse(progress=pb.Progress(tiles_done=done, tiles_total=total))
            result, compute_s, files = await future
            h, w = result.mask.shape
            step = chunk_pixels or chunk
            for offset in range(0, h * w, step):
                length = min(step, h * w - offset)
                data = await asyncio.to_thread(compress_range, result.mask, offset, length)
                yield pb.SegmentResponse(
                    mask=pb.MaskChunk(height=h, width=w, offset=offset, length=length, zlib_data=data)
                )
            spooled = sum(p.stat().st_size for p in files.values())
            self.spool.add(spooled)  # counted while they are sent
            try:
                for fmt, path in files.items():
                    pieces = file_pieces(path, chunk)
                    while (piece := await asyncio.to_thread(next, pieces, None)) is not None:
                        offset, data, last = piece
                        length = min(chunk, path.stat().st_size - offset)
                        yield pb.SegmentResponse(
                            vector=pb.VectorChunk(
                                format=fmt, offset=offset, length=length, zlib_data=data, last=last
                            )
                        )
            finally:
                self.spool.release(spooled)
            report = self._report(call, result, waited, compute_s, files)
        text = report.report_json.encode()
        if len(text) > chunk:
            for start in range(0, len(text), chunk):
                yield pb.SegmentResponse(report_part=text[start : start + chunk])
            report.report_json = ""
            report.report_streamed = True
        yield pb.SegmentResponse(report=report)

    def _compute(
        self,
        call: _Call,
        pipeline: Pipeline,
        name: str,
        image: np.ndarray,
        slot: Slot,
        progress: Callable[[int], None],
        vector: VectorOptions | None,
        folder: Path,
    ) -> asyncio.Future:
        """Run the pipeline (and the vectorizer) in a worker thread; the slot is released when the
        thread is done. The future's result: (result, compute seconds, {format: vector file})."""
        ticket = call.ticket

        def work() -> tuple[SegmentResult, float, dict[str, Path]]:
            t0 = time.perf_counter()
            with self.engine.session(ticket):
                ticket.check()
                (result,) = pipeline.segment_many([(name, lambda: image)], progress, ticket.check)
            if not isinstance(result, SegmentResult):
                raise result.error
            files: dict[str, Path] = {}
            if vector is not None:
                ticket.check()
                files = _write_vectors(result.mask, folder, name, vector)
            return result, time.perf_counter() - t0, files

        slot.hold()
        future = asyncio.get_running_loop().run_in_executor(self.executor, work)

        def done(f: asyncio.Future) -> None:
            slot.release()
            self._gauge()
            if not f.cancelled():
                f.exception()  # retrieved: a call that ended first (deadline, client gone) never awaits it

        future.add_done_callback(done)
        return future

    def _report(
        self, call: _Call, result: SegmentResult, waited: float, compute_s: float, files: dict[str, Path]
    ) -> pb.SegmentReport:
        self.metrics.compute_seconds.observe(compute_s)
        call.fields.update(
            queue_s=round(waited, 4), compute_s=round(compute_s, 4), tiles=len(result.report.patches)
        )
        report = {**result.report.to_json(), "request_id": call.request_id}
        if files:
            report["vectors"] = {fmt: p.stat().st_size for fmt, p in files.items()}
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
            lim = self.limits
            spec = parse_header(request.header, lim.max_tile_pixels, lim.max_encoded_bytes)
            if request.header.vector.formats:
                raise InputError(None, "SegmentTile does not return vectors", "the Segment call")
            pipeline = self.engine.pipeline(request.header.options)
            if spec.kind == "raw":
                check_inputs(
                    spec.height,
                    spec.width,
                    pipeline.count_inputs(spec.height, spec.width),
                    lim.max_tile_inputs,
                )
            held.slot = self._admit(spec, None, call.peer)
            bounds = (lim.max_tile_pixels, lim.max_tile_inputs, len(request.data))
            image = await self._receive(spec, _one_chunk(request.data), held.slot, pipeline, bounds, None)
            mask = None
            report = None
            parts: list[bytes] = []
            async for msg in self._run(call, pipeline, spec.name, image, held.slot, None, image.size):
                if msg.HasField("report"):
                    report = msg.report
                elif msg.HasField("mask"):
                    mask = msg.mask
                elif msg.HasField("report_part"):
                    parts.append(msg.report_part)
            if report is not None and report.report_streamed:  # a tile's report is small; never here
                report.report_json, report.report_streamed = b"".join(parts).decode(), False
            return pb.SegmentTileResponse(mask=mask, report=report)

    # ------------------------------------------------------------------ jobs
    @_unary("SubmitJob")
    async def SubmitJob(self, request, call: _Call) -> pb.Job:
        vector = vector_options(request.vector) if self.jobs.enabled else None
        job = await self.jobs.submit(list(request.inputs), dict(request.options), request.overwrite, vector)
        call.fields.update(job_id=job.job_id, files=len(job.files))
        return job

    @_unary("GetJob", names_job=True)
    async def GetJob(self, request, call: _Call) -> pb.Job:
        return self.jobs.get(request.job_id)

    @_unary("CancelJob", names_job=True)
    async def CancelJob(self, request, call: _Call) -> pb.Job:
        return self.jobs.cancel(request.job_id)

    @_unary("ListJobs")
    async def ListJobs(self, request, call: _Call) -> pb.ListJobsResponse:
        return pb.ListJobsResponse(jobs=self.jobs.list_jobs(request.limit or LIST_JOBS_DEFAULT))

    async def WatchJob(self, request, context) -> AsyncIterator[pb.Job]:
        call = _Call("WatchJob", context, self.metrics)
        await call.begin()
        try:
            async for snap in self.jobs.watch(request.job_id):
                yield snap
            call.finish(grpc.StatusCode.OK)
        except asyncio.CancelledError:
            call.finish(call.ended_code())
            raise
        except Exception as exc:
            await call.fail(_job_error(exc, request.job_id))

    # ------------------------------------------------------------------ info
    async def GetModelInfo(self, request, context) -> pb.ModelInfo:
        from samsem.vector import FORMATS as VECTOR_FORMATS

        call = _Call("GetModelInfo", context, self.metrics)
        await call.begin()
        e = self.engine
        lim = self.limits
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
            chunk_bytes=lim.chunk_bytes,
            max_image_pixels=lim.max_image_pixels,
            max_tile_pixels=lim.max_tile_pixels,
            version=__version__,
            max_inputs=lim.max_inputs,
            max_name_bytes=MAX_NAME_BYTES,
            upload_idle_seconds=lim.upload_idle_s,
            max_calls_per_peer=self.admission.max_per_peer,
            vector_formats=list(VECTOR_FORMATS),
        )
        call.finish(grpc.StatusCode.OK)
        return info

    def _gauge(self) -> None:
        self.metrics.queue_depth.set(self.admission.waiting)
        self.metrics.active.set(self.admission.active)


def peer_address(peer: str) -> str:
    """The client address of a gRPC peer string without its port ("ipv4:1.2.3.4:5678" -> "ipv4:1.2.3.4")."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6") and ":" in rest:
        return f"{kind}:{rest.rsplit(':', 1)[0]}"
    return peer


def _stalled(idle_s: float, slow: bool = False) -> _Abort:
    why = "slower than the server's minimum upload rate" if slow else f"no data for {idle_s:g} s"
    return _Abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"upload stalled ({why}); the call was ended")


def _vector_bytes(height: int, width: int, vector: VectorOptions | None) -> int:
    return 0 if vector is None else VECTOR_BYTES_PER_PIXEL * height * width


def _buffer_bytes(spec: ImageSpec, vector: VectorOptions | None) -> int:
    """Server memory a raw request's image and mask take (encoded images: 0, known once decoded)."""
    if spec.kind != "raw":
        return 0
    return spec.nbytes + spec.height * spec.width + _vector_bytes(spec.height, spec.width, vector)


def _write_vectors(mask: np.ndarray, folder: Path, name: str, options: VectorOptions) -> dict[str, Path]:
    """Vectorize ``mask`` and write one file per format into ``folder`` (fixed file names: ``name``,
    the client's, only names the GDSII cell)."""
    from samsem.vector import FORMATS as VECTOR_FORMATS
    from samsem.vector import vectorize

    polys = vectorize(mask, options)
    files = {}
    for fmt in options.formats:
        suffix, writer = VECTOR_FORMATS[fmt]
        files[fmt] = writer(polys, folder / f"vector{suffix}", name, options)
    return files


async def _one_chunk(data: bytes):
    """The unary request's bytes as a one-chunk stream of SegmentRequest messages."""
    yield pb.SegmentRequest(chunk=data)


def _job_error(exc: Exception, job_id: str) -> Exception:
    if isinstance(exc, KeyError):
        return _Abort(grpc.StatusCode.NOT_FOUND, f"no job {clip(job_id, 64)!r} (unknown or expired)")
    return exc


def _json_default(obj):
    if isinstance(obj, np.ndarray | np.generic):
        return obj.tolist()
    return str(obj)
