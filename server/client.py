"""A small synchronous Python client of the samsem gRPC service (used by ``samsem client`` and the tests).

    with SamsemClient("127.0.0.1:50051") as client:
        out = client.segment(image)          # (H, W) uint8/uint16 array, or a PNG/TIFF path
        out.mask, out.report                 # (H, W) uint8 {0, 1}, dict
        out = client.segment(image, vector=VectorOptions(formats=("svg", "gds")))
        out.vectors["svg"]                   # the file's bytes, as `samsem segment --vector` writes it

Failures raise ``grpc.RpcError`` (``.code()``, ``.details()``; RESOURCE_EXHAUSTED carries
``retry-after-ms`` in its trailing metadata, see :func:`retry_after_s`).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from samsem.errors import InputError
from samsem.server import samsem_pb2 as pb
from samsem.server import samsem_pb2_grpc as pb_grpc
from samsem.server.codec import MaskAssembler, VectorAssembler, vector_request
from samsem.server.security import channel_credentials

if TYPE_CHECKING:
    from samsem.vector import VectorOptions

DEFAULT_CHUNK_BYTES = 1 << 20  # must not exceed the server's chunk_bytes (GetModelInfo)
RECEIVE_LIMIT = 64 << 20  # largest message the client accepts (the server sends <= ~1 MiB + reports)
ENCODED_FORMATS = {".png": "png", ".tif": "tiff", ".tiff": "tiff"}
Progress = Callable[[int, int], None]  # (tiles_done, tiles_total)


@dataclass
class SegmentOutput:
    """A segmented image: ``mask`` (H, W) uint8 {0, 1}, the runtime's ``report``, call facts and, when
    asked for, the ``vectors`` (format -> file bytes)."""

    name: str
    mask: np.ndarray
    report: dict
    request_id: str
    queue_seconds: float
    compute_seconds: float
    vectors: dict[str, bytes] = field(default_factory=dict)


def retry_after_s(error: grpc.RpcError) -> float | None:
    """The server's retry hint (seconds) of a RESOURCE_EXHAUSTED error, else None."""
    for key, value in error.trailing_metadata() or ():
        if key == "retry-after-ms":
            return int(value) / 1000
    return None


class SamsemClient:
    """Connection to one server. ``tls`` (or any of ca/cert/key) uses TLS; cert+key add a client
    certificate (mutual TLS); ``token`` is sent as ``authorization: Bearer <token>``."""

    def __init__(
        self,
        target: str,
        *,
        tls: bool = False,
        ca: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
        token: str | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        timeout: float | None = None,
    ) -> None:
        options = [
            ("grpc.max_receive_message_length", RECEIVE_LIMIT),
            ("grpc.max_send_message_length", RECEIVE_LIMIT),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ]
        if tls or ca is not None or cert is not None:
            self.channel = grpc.secure_channel(target, channel_credentials(ca, cert, key), options)
        else:
            self.channel = grpc.insecure_channel(target, options)
        self.stub = pb_grpc.SegmentationStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)
        self.metadata: tuple[tuple[str, str], ...] = (
            () if token is None else (("authorization", f"Bearer {token}"),)
        )
        self.chunk_bytes = chunk_bytes
        self.timeout = timeout

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> SamsemClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _md(self, request_id: str | None) -> tuple[tuple[str, str], ...]:
        return (*self.metadata, ("x-request-id", request_id or uuid.uuid4().hex[:16]))

    # ------------------------------------------------------------------ segmentation
    def segment(
        self,
        image: np.ndarray | str | Path,
        *,
        name: str | None = None,
        options: Mapping[str, str] | None = None,
        progress: Progress | None = None,
        timeout: float | None = None,
        request_id: str | None = None,
        vector: VectorOptions | None = None,
    ) -> SegmentOutput:
        """Segment one image with the streaming ``Segment`` call.

        image: (H, W) uint8/uint16 array (sent raw), or a PNG/TIFF path (sent as the file's bytes,
        read in chunks, and decoded by the server). ``progress(done, total)`` follows the tiles.
        ``vector``: also return the mask's polygons as files in these formats (``out.vectors``).
        """
        header, chunks = self._prepare(image, name, options)
        if vector is not None:
            header.vector.CopyFrom(vector_request(vector))
        requests = _requests(header, chunks)
        call = self.stub.Segment(requests, timeout=timeout or self.timeout, metadata=self._md(request_id))
        return collect_segment(call, progress)

    def segment_tile(
        self,
        image: np.ndarray,
        *,
        name: str = "tile",
        options: Mapping[str, str] | None = None,
        timeout: float | None = None,
        request_id: str | None = None,
        vector: VectorOptions | None = None,
    ) -> SegmentOutput:
        """Segment a small (H, W) uint8/uint16 array (at most the server's max_tile_pixels) in one call.
        The server refuses ``vector`` here (vectors come with :meth:`segment` only)."""
        header, _ = self._prepare(image, name, options)
        if vector is not None:
            header.vector.CopyFrom(vector_request(vector))
        raw = _raw_bytes(image)
        reply = self.stub.SegmentTile(
            pb.SegmentTileRequest(header=header, data=raw.tobytes()),
            timeout=timeout or self.timeout,
            metadata=self._md(request_id),
        )
        asm = MaskAssembler(reply.mask.height, reply.mask.width)
        asm.add(reply.mask)
        return _output(asm, reply.report)

    def _prepare(
        self, image: np.ndarray | str | Path, name: str | None, options: Mapping[str, str] | None
    ) -> tuple[pb.ImageHeader, Iterator[bytes]]:
        opts = {k: str(v) for k, v in (options or {}).items()}
        if isinstance(image, str | Path):
            path = Path(image)
            fmt = ENCODED_FORMATS.get(path.suffix.lower())
            if fmt is None:
                raise InputError(path, f"unsupported file type {path.suffix!r}", ", ".join(ENCODED_FORMATS))
            from samsem.io import open_regular

            with open_regular(path) as fh:  # a regular file (a FIFO would block the upload)
                size = os.fstat(fh.fileno()).st_size
            header = pb.ImageHeader(
                name=name or path.stem, encoded=pb.EncodedLayout(format=fmt, size=size), options=opts
            )
            return header, _file_chunks(path, self.chunk_bytes)
        arr = np.asarray(image)
        if arr.ndim != 2 or arr.dtype not in (np.uint8, np.uint16):
            raise InputError(None, f"image must be (H, W) uint8 or uint16, got {arr.shape} {arr.dtype}")
        layout = pb.RawLayout(dtype=arr.dtype.name, height=arr.shape[0], width=arr.shape[1])
        header = pb.ImageHeader(name=name or "image", raw=layout, options=opts)
        return header, _array_chunks(arr, self.chunk_bytes)

    # ------------------------------------------------------------------ jobs and info
    def submit_job(
        self,
        inputs: Sequence[str],
        *,
        options: Mapping[str, str] | None = None,
        overwrite: bool = False,
        vector: VectorOptions | None = None,
    ) -> pb.Job:
        """Queue a job over files the server can read (absolute paths under its job roots); ``vector``
        also writes vector files beside each mask."""
        request = pb.SubmitJobRequest(
            inputs=list(inputs), options={k: str(v) for k, v in (options or {}).items()}, overwrite=overwrite
        )
        if vector is not None:
            request.vector.CopyFrom(vector_request(vector))
        return self.stub.SubmitJob(request, timeout=self.timeout, metadata=self._md(None))

    def list_jobs(self, limit: int = 0) -> list[pb.Job]:
        """The server's jobs, newest first, without their file lists (``limit`` 0: the server's default)."""
        reply = self.stub.ListJobs(
            pb.ListJobsRequest(limit=limit), timeout=self.timeout, metadata=self._md(None)
        )
        return list(reply.jobs)

    def get_job(self, job_id: str) -> pb.Job:
        return self.stub.GetJob(pb.JobRef(job_id=job_id), timeout=self.timeout, metadata=self._md(None))

    def cancel_job(self, job_id: str) -> pb.Job:
        return self.stub.CancelJob(pb.JobRef(job_id=job_id), timeout=self.timeout, metadata=self._md(None))

    def watch_job(self, job_id: str, timeout: float | None = None) -> Iterator[pb.Job]:
        """The job's snapshots as it changes, ending with its final state."""
        yield from self.stub.WatchJob(pb.JobRef(job_id=job_id), timeout=timeout, metadata=self._md(None))

    def model_info(self) -> pb.ModelInfo:
        return self.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=self.timeout, metadata=self._md(None))

    def health(self, service: str = "") -> str:
        """Serving status name of ``service`` ("" = the whole server): SERVING, NOT_SERVING, ..."""
        reply = self.health_stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def _raw_bytes(image: np.ndarray) -> np.ndarray:
    """The row-major little-endian bytes of an (H, W) uint8/uint16 array as a flat uint8 view."""
    arr = np.ascontiguousarray(image, dtype=np.asarray(image).dtype.newbyteorder("<"))
    return arr.reshape(-1).view(np.uint8)


def _array_chunks(image: np.ndarray, chunk_bytes: int) -> Iterator[bytes]:
    flat = _raw_bytes(image)
    for start in range(0, flat.size, chunk_bytes):
        yield flat[start : start + chunk_bytes].tobytes()


def _file_chunks(path: Path, chunk_bytes: int) -> Iterator[bytes]:
    from samsem.io import open_regular

    with open_regular(path) as fh:
        while chunk := fh.read(chunk_bytes):
            yield chunk


def _requests(header: pb.ImageHeader, chunks: Iterator[bytes]) -> Iterator[pb.SegmentRequest]:
    yield pb.SegmentRequest(header=header)
    for chunk in chunks:
        yield pb.SegmentRequest(chunk=chunk)


def collect_segment(responses, progress: Progress | None) -> SegmentOutput:
    """Read a Segment response stream: progress, mask chunks, vector pieces, report pieces, report."""
    asm: MaskAssembler | None = None
    vectors = VectorAssembler()
    parts: list[bytes] = []
    for msg in responses:
        part = msg.WhichOneof("part")
        if part == "progress":
            if progress is not None:
                progress(msg.progress.tiles_done, msg.progress.tiles_total)
        elif part == "mask":
            if asm is None:
                asm = MaskAssembler(msg.mask.height, msg.mask.width)
            asm.add(msg.mask)
        elif part == "vector":
            vectors.add(msg.vector)
        elif part == "report_part":
            parts.append(msg.report_part)
        elif part == "report":
            if asm is None or not asm.complete:
                raise InputError(None, "the server sent the report before the whole mask")
            text = b"".join(parts).decode() if msg.report.report_streamed else msg.report.report_json
            out = _output(asm, msg.report, text, vectors.result())
            for _ in responses:  # read on to the server's status: a call left open ends there as
                pass  # cancelled, before the server has recorded it (log line, metrics)
            return out
    raise InputError(None, "the server's response ended without a report")


def _output(
    asm: MaskAssembler,
    report: pb.SegmentReport,
    text: str | None = None,
    vectors: dict[str, bytes] | None = None,
) -> SegmentOutput:
    return SegmentOutput(
        name=report.name,
        mask=asm.mask,
        report=json.loads(report.report_json if text is None else text),
        request_id=report.request_id,
        queue_seconds=report.queue_seconds,
        compute_seconds=report.compute_seconds,
        vectors=vectors or {},
    )
