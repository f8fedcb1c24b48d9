"""Prometheus metrics (on their own port, own registry) and structured JSON logs with request ids."""

from __future__ import annotations

import json
import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from samsem.server.batching import BatchStats

LOGGER_NAME = "samsem.server"
_TIME_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """The server's metrics in a private registry (several servers can live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "samsem_requests", "Finished RPCs by method and status code", ["method", "code"], registry=r
        )
        self.queue_seconds = Histogram(
            "samsem_queue_seconds",
            "Time admitted requests waited for a compute slot",
            buckets=_TIME_BUCKETS,
            registry=r,
        )
        self.compute_seconds = Histogram(
            "samsem_compute_seconds", "Pipeline time per image", buckets=_TIME_BUCKETS, registry=r
        )
        self.tiles = Counter("samsem_tiles", "Model inputs processed (rate() gives tiles/s)", registry=r)
        self.batch_size = Histogram(
            "samsem_batch_size", "Model inputs per coalesced model call", buckets=_BATCH_BUCKETS, registry=r
        )
        self.batch_requests = Histogram(
            "samsem_batch_requests", "Requests merged into one model call", buckets=_BATCH_BUCKETS, registry=r
        )
        self.tile_queue_seconds = Histogram(
            "samsem_tile_queue_seconds",
            "Time a batch of tiles waited for the model",
            buckets=_TIME_BUCKETS,
            registry=r,
        )
        self.model_seconds = Histogram(
            "samsem_model_seconds", "Time of one coalesced model call", buckets=_TIME_BUCKETS, registry=r
        )
        self.queue_depth = Gauge(
            "samsem_queue_depth", "Admitted requests waiting for a compute slot", registry=r
        )
        self.active = Gauge("samsem_active_requests", "Requests computing now", registry=r)
        self.jobs = Gauge("samsem_jobs", "Jobs by state", ["state"], registry=r)
        self.refused_paths = Counter(
            "samsem_job_files_refused",
            "Job files refused when opened because their path left the roots",
            registry=r,
        )
        self._http: Any = None

    def rejected(self, method: str, code: Any, details: str, peer: str = "") -> None:
        """Count and log a call refused before it reached the servicer (UNAUTHENTICATED, UNAVAILABLE
        while draining, INVALID_ARGUMENT for an unparsable request)."""
        name = method.rsplit("/", 1)[-1]
        self.requests.labels(name, code.name).inc()
        log(logging.WARNING, f"{name} {code.name}", method=name, code=code.name, details=details, peer=peer)

    def on_batch(self, stats: BatchStats) -> None:
        """Record one coalesced model call (called from the batcher thread)."""
        self.tiles.inc(stats.size)
        self.batch_size.observe(stats.size)
        self.batch_requests.observe(stats.requests)
        self.model_seconds.observe(stats.compute_s)
        for w in stats.waits:
            self.tile_queue_seconds.observe(w)

    def set_jobs(self, counts: dict[str, int]) -> None:
        """Record the number of jobs in each state."""
        for state, n in counts.items():
            self.jobs.labels(state).set(n)

    def serve(self, host: str, port: int) -> int:
        """Expose /metrics over HTTP on host:port (0 picks a free port); returns the bound port."""
        self._http, _ = start_http_server(port, addr=host, registry=self.registry)
        return int(self._http.server_address[1])

    def close(self) -> None:
        """Stop the HTTP exporter."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg and any ``extra={"fields": {...}}`` entries."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "info") -> None:
    """Send the server's logs to stderr as JSON lines."""
    logger = logging.getLogger(LOGGER_NAME)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False


def log(level: int, msg: str, **fields: Any) -> None:
    """Log ``msg`` with structured ``fields`` (request_id, method, code, timings, ...)."""
    logging.getLogger(LOGGER_NAME).log(level, msg, extra={"fields": fields})
