"""The grpc.aio server: configuration, assembly (service, health, reflection, metrics), lifecycle.

Message sizes: the server accepts messages of at most ``max(chunk_bytes, 2 * max_tile_pixels) +
MESSAGE_MARGIN`` bytes (a Segment chunk or a whole uint16 tile plus protobuf framing and header),
so one call can never make it buffer more; it sends at most a mask chunk, a vector piece or a report
piece (``chunk_bytes``), or a tile's mask and report, plus the margin: a Segment reply of any size is
streamed in such pieces, and a tile's model inputs are bounded (``max_tile_inputs``), so no reply
can outgrow the limit after the work is done.

Keepalive: the server pings idle connections every ``keepalive_s`` (default 30 s) and drops them
if no answer comes within 10 s (dead clients free their calls); clients may ping at most every 10 s,
also without calls in flight (the client API pings every 30 s).

Shutdown (:meth:`SamsemServer.stop`, on SIGTERM/SIGINT in ``samsem serve``): health turns
NOT_SERVING, new calls get UNAVAILABLE, in-flight calls and the running job get ``grace_s`` seconds
to finish, then everything left is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import shutil
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from samsem.errors import ConfigError
from samsem.runtime.pipeline import Pipeline
from samsem.server import samsem_pb2 as pb
from samsem.server import samsem_pb2_grpc as pb_grpc
from samsem.server.admission import Admission
from samsem.server.codec import MAX_NAME_BYTES
from samsem.server.engine import Engine
from samsem.server.jobs import JobLimits, JobManager
from samsem.server.jobstore import JobStore
from samsem.server.observability import Metrics, log
from samsem.server.security import CallGuard, certificate_problem, server_credentials
from samsem.server.service import Limits, ModelFacts, SegmentationService
from samsem.server.spool import Spool

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Segmentation"].full_name
MESSAGE_MARGIN = 64 * 1024
REPORT_BYTES_PER_TILE = 400  # JSON of one patch record in a report, generously (measured ~200)
KEEPALIVE_TIMEOUT_S = 10
MIN_CLIENT_PING_S = 10


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``samsem serve`` can set besides the model (defaults in brackets).

    Batching: ``max_batch`` model inputs per model call [16], ``max_delay_ms`` a batch waits for company
    [5], ``request_batch`` inputs one request submits at a time [4]. Admission: ``max_active`` requests
    computing [8], ``max_queued`` waiting [32], ``memory_budget`` bytes of image + mask buffers over all
    admitted requests [8 GiB], ``max_calls_per_peer`` admitted Segment/SegmentTile calls of one client
    address [16], ``max_peer_upload`` bytes one client address may declare in uploads of its admitted
    calls beyond its first [0: half of ``memory_budget``]. Uploads: ``upload_idle_s`` longest pause
    between messages [30 s], ``upload_min_rate`` bytes/s [1 MiB/s], ``spool_budget`` bytes of encoded
    uploads on disk in ``tmp_dir`` [8 GiB]. Sizes: ``chunk_bytes`` [1 MiB], ``max_image_pixels`` [2^30],
    ``max_tile_pixels`` for SegmentTile [2048^2], ``max_encoded_bytes`` [2 GiB], ``max_inputs`` model
    inputs per request [0: what the largest square image within ``max_image_pixels`` needs]. Jobs:
    ``job_roots`` (none: jobs disabled), ``output_root`` (none: beside inputs), ``job_db`` SQLite file of
    job state (None: in memory, lost at exit; ``samsem serve`` defaults to
    ``~/.local/state/samsem/jobs.sqlite``). Security: ``tls_cert``/``tls_key`` enable TLS,
    ``tls_client_ca`` requires client certificates (mTLS), ``tokens`` require a bearer token.
    ``metrics_port`` None: no metrics endpoint (0: any free port).
    """

    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int | None = None
    max_batch: int = 16
    max_delay_ms: float = 5.0
    request_batch: int = 4
    max_active: int = 8
    max_queued: int = 32
    memory_budget: int = 8 << 30
    max_calls_per_peer: int = 16
    max_peer_upload: int = 0
    upload_idle_s: float = 30.0
    upload_min_rate: float = float(1 << 20)
    spool_budget: int = 8 << 30
    max_inputs: int = 0
    chunk_bytes: int = 1 << 20
    max_image_pixels: int = 1 << 30
    max_tile_pixels: int = 2048 * 2048
    max_encoded_bytes: int = 2 << 30
    job_roots: tuple[Path, ...] = ()
    output_root: Path | None = None
    job_db: Path | None = None
    max_queued_jobs: int = 64
    max_kept_jobs: int = 1000
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    tokens: tuple[str, ...] = field(default=(), repr=False)
    grace_s: float = 30.0
    keepalive_s: float = 30.0
    tmp_dir: Path | None = None
    backend: str = "auto"
    device: str = "cpu"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        for name in (
            "max_batch",
            "request_batch",
            "max_active",
            "chunk_bytes",
            "max_image_pixels",
            "max_tile_pixels",
            "max_calls_per_peer",
            "spool_budget",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.request_batch > self.max_batch:
            raise ConfigError(
                f"request_batch ({self.request_batch}) must not exceed max_batch ({self.max_batch})"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("TLS needs both a certificate and a key")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ConfigError("mutual TLS (client CA) needs TLS (certificate and key)")
        if not (self.upload_idle_s > 0 and self.upload_min_rate > 0 and self.max_inputs >= 0):
            raise ConfigError("upload_idle_s and upload_min_rate must be > 0, max_inputs >= 0")
        if self.max_peer_upload < 0:
            raise ConfigError(
                f"max_peer_upload must be >= 0 (0: half the memory budget), got {self.max_peer_upload}"
            )

    def receive_limit(self) -> int:
        """Largest message the server accepts (bytes)."""
        return max(self.chunk_bytes, 2 * self.max_tile_pixels) + MESSAGE_MARGIN

    def input_limits(self, pipeline: Pipeline) -> tuple[int, int]:
        """(model inputs per Segment request, per SegmentTile request): what the largest square image
        (tile) needs, unless ``max_inputs`` sets the first."""
        side, tile = math.isqrt(self.max_image_pixels), math.isqrt(self.max_tile_pixels)
        image = self.max_inputs or pipeline.count_inputs(side, side)
        return image, min(image, pipeline.count_inputs(tile, tile))

    def send_limit(self, pipeline: Pipeline) -> int:
        """Largest message the server sends: a piece of a Segment reply (mask, vector file, report;
        at most ``chunk_bytes`` each plus the name), or a tile's mask and report."""
        tile_report = self.input_limits(pipeline)[1] * REPORT_BYTES_PER_TILE + 3 * MAX_NAME_BYTES
        return max(self.chunk_bytes + 3 * MAX_NAME_BYTES, self.max_tile_pixels + tile_report) + MESSAGE_MARGIN

    def grpc_options(self, pipeline: Pipeline) -> list[tuple[str, int]]:
        """Channel arguments of the server: message limits and keepalive."""
        return [
            ("grpc.max_receive_message_length", self.receive_limit()),
            ("grpc.max_send_message_length", self.send_limit(pipeline)),
            ("grpc.keepalive_time_ms", int(self.keepalive_s * 1000)),
            ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_S * 1000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_S * 1000),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.so_reuseport", 0),
        ]


class SamsemServer:
    """One server: ``await start()``, then ``await stop()`` (or :meth:`run_until_signal`)."""

    def __init__(self, config: ServerConfig, pipeline: Pipeline) -> None:
        self.config = config
        self.pipeline = pipeline
        self.metrics = Metrics()
        self.port = 0
        self.metrics_port: int | None = None
        self.draining = False
        self._stopped: asyncio.Event | None = None

    async def start(self) -> int:
        """Bind, start serving and mark health SERVING; returns the bound port."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        store = JobStore(cfg.job_db if cfg.job_roots else None)  # first: refuses a database in use
        self.engine = Engine(
            self.pipeline,
            max_batch=cfg.max_batch,
            max_delay_s=cfg.max_delay_ms / 1000,
            request_batch=cfg.request_batch,
            on_batch=self.metrics.on_batch,
        )
        max_inputs, max_tile_inputs = cfg.input_limits(self.pipeline)
        self.admission = Admission(
            cfg.max_active,
            cfg.max_queued,
            cfg.memory_budget,
            cfg.max_calls_per_peer,
            cfg.max_peer_upload or None,
        )
        try:
            self.spool = Spool(cfg.tmp_dir, cfg.spool_budget, self.admission.retry_after)
            self.jobs = JobManager(
                self.engine,
                cfg.job_roots,
                cfg.output_root,
                loop,
                max_queued=cfg.max_queued_jobs,
                max_kept=cfg.max_kept_jobs,
                on_change=self.metrics.set_jobs,
                store=store,
                limits=JobLimits(cfg.max_image_pixels, max_inputs),
                on_refused=self.metrics.refused_paths.inc,
                private_dir=self.spool.dir,
            )
        except BaseException:
            store.close()
            self.engine.close()
            if hasattr(self, "spool"):
                self.spool.close()
            raise
        self.store = store
        self.executor = ThreadPoolExecutor(max_workers=cfg.max_active, thread_name_prefix="samsem-request")
        for stale in self.spool.removed:
            log(logging.INFO, "removed a stale upload spool", path=str(stale))
        free = shutil.disk_usage(self.spool.dir).free
        if free < cfg.spool_budget:
            log(
                logging.WARNING,
                "the spool budget exceeds the free space of its folder",
                spool=str(self.spool.dir),
                free_bytes=free,
                spool_budget=cfg.spool_budget,
            )
        self.server = grpc.aio.server(
            interceptors=[
                CallGuard(
                    cfg.tokens,
                    lambda: self.draining,
                    self.metrics.rejected,
                    parsed_prefix=f"/{SERVICE_NAME}/",
                )
            ],
            options=cfg.grpc_options(self.pipeline),
        )
        service = SegmentationService(
            self.engine,
            self.admission,
            self.jobs,
            self.metrics,
            Limits(
                cfg.chunk_bytes,
                cfg.max_image_pixels,
                cfg.max_tile_pixels,
                cfg.max_encoded_bytes,
                max_inputs,
                max_tile_inputs,
                cfg.upload_idle_s,
                cfg.upload_min_rate,
            ),
            ModelFacts(cfg.backend, cfg.device, cfg.precision),
            self.executor,
            self.spool,
        )
        pb_grpc.add_SegmentationServicer_to_server(service, self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        address = f"{cfg.host}:{cfg.port}"
        if cfg.tls_cert is not None:
            creds = server_credentials(cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca)  # type: ignore[arg-type]
            problem = certificate_problem(cfg.tls_cert)
            if problem is not None:
                log(logging.WARNING, problem)
        try:  # a port in use: one clear line (grpc raises RuntimeError, the metrics server OSError)
            if cfg.tls_cert is not None:
                self.port = self.server.add_secure_port(address, creds)
            else:
                self.port = self.server.add_insecure_port(address)
            if self.port == 0:
                raise RuntimeError("bind failed")
            await self.server.start()
            for name in ("", SERVICE_NAME):
                await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
            if cfg.metrics_port is not None:
                address = f"{cfg.host}:{cfg.metrics_port} (metrics)"
                self.metrics_port = self.metrics.serve(cfg.host, cfg.metrics_port)
        except (RuntimeError, OSError) as exc:
            await self._abort_start()
            reason = (
                exc.strerror if isinstance(exc, OSError) and exc.strerror else "address in use or unavailable"
            )
            raise ConfigError(
                f"cannot listen on {address}: {reason}; choose another port (0 = any free one) or stop the "
                "process using it"
            ) from None
        log(
            20,
            "serving",
            address=f"{cfg.host}:{self.port}",
            tls=cfg.tls_cert is not None,
            mtls=cfg.tls_client_ca is not None,
            auth=bool(cfg.tokens),
            metrics_port=self.metrics_port,
            job_db=None if not cfg.job_roots or cfg.job_db is None else str(cfg.job_db),
            max_inputs=max_inputs,
            model=self.pipeline.info.to_json() if self.pipeline.info is not None else {},
        )
        return self.port

    async def _abort_start(self) -> None:
        """Release what :meth:`start` built when it cannot bind (no drain: nothing was served)."""
        await self.server.stop(None)
        await asyncio.to_thread(self.jobs.shutdown)
        await asyncio.to_thread(self.engine.close)
        await asyncio.to_thread(self.executor.shutdown, True)
        self.metrics.close()

    async def stop(self, grace_s: float | None = None) -> None:
        """Graceful shutdown: NOT_SERVING, refuse new calls, let in-flight ones finish within the grace."""
        if self.draining:
            await self._stopped.wait()  # type: ignore[union-attr]
            return
        grace = self.config.grace_s if grace_s is None else grace_s
        self.draining = True
        log(20, "draining", grace_s=grace)
        await self.health.enter_graceful_shutdown()
        deadline = asyncio.get_running_loop().time() + grace
        while self.jobs.running() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        await self.server.stop(max(0.0, deadline - asyncio.get_running_loop().time()))
        await asyncio.to_thread(self.jobs.shutdown)
        await asyncio.to_thread(self.engine.close)
        await asyncio.to_thread(self.executor.shutdown, True)
        self.store.close()
        self.spool.close()
        self.metrics.close()
        log(20, "stopped")
        self._stopped.set()  # type: ignore[union-attr]

    async def run_until_signal(self, ready_file: Path | None = None) -> None:
        """Serve until SIGTERM or SIGINT, then shut down gracefully (``samsem serve``)."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        if ready_file is not None:
            from samsem.io import atomic_path

            with atomic_path(ready_file) as tmp:
                tmp.write_text(f"{self.config.host}:{self.port}\n")
        await stop.wait()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await self.stop()


class ServerThread:
    """A server on its own event loop in a background thread (tests, benchmarks, embedding).

    ``with ServerThread(config, pipeline) as srv:`` ... ``srv.address``; leaving the block stops it.
    """

    def __init__(self, config: ServerConfig, pipeline: Pipeline) -> None:
        self.server = SamsemServer(config, pipeline)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="samsem-server", daemon=True)
        self._thread.start()
        try:
            self.port = self._call(self.server.start())
        except BaseException:
            self._close_loop()
            raise
        self.address = f"{config.host}:{self.port}"

    def _call(self, coro, timeout: float | None = None):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def begin_stop(self, grace_s: float | None = None):
        """Start a graceful shutdown without waiting; returns a concurrent Future."""
        return asyncio.run_coroutine_threadsafe(self.server.stop(grace_s), self._loop)

    def stop(self, grace_s: float | None = 0.0) -> None:
        """Shut down (by default without grace) and end the thread."""
        if self._loop.is_closed():
            return
        self._call(self.server.stop(grace_s))
        self._close_loop()

    def _close_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        with contextlib.suppress(RuntimeError):
            self._loop.close()

    def __enter__(self) -> ServerThread:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
