"""`samsem serve`: run the gRPC segmentation service until SIGTERM/SIGINT (then drain gracefully)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from samsem.runtime.cli import add_model_options

_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``serve`` subcommand."""
    p = sub.add_parser(
        "serve",
        help="run the gRPC segmentation service",
        description="Serve the multi-scale pipeline over gRPC (service samsem.v1.Segmentation, plus "
        "grpc.health.v1 and server reflection). See docs/server.md.",
    )
    add_model_options(p, batch_size=False)
    p.add_argument("--single-scale", type=int, choices=[1, 2], default=None, help="run only model 1 or 2")
    p.add_argument(
        "--fallback",
        choices=["sauvola", "model1", "model2"],
        default="model2",
        help="what fills patches where both models are speckled (default model2)",
    )
    net = p.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    net.add_argument(
        "--port", type=int, default=50051, help="port (default 50051; 0: any free port, see --ready-file)"
    )
    net.add_argument("--metrics-port", type=int, default=None, help="Prometheus /metrics port (default: off)")
    net.add_argument("--ready-file", type=Path, default=None, help="write HOST:PORT here once serving")
    lim = p.add_argument_group("batching and limits")
    lim.add_argument("--max-batch", type=int, default=16, help="model inputs per model call (default 16)")
    lim.add_argument(
        "--max-delay-ms", type=float, default=5.0, help="longest wait for a fuller batch (default 5)"
    )
    lim.add_argument(
        "--request-batch", type=int, default=4, help="inputs one request submits at once (default 4)"
    )
    lim.add_argument("--max-active", type=int, default=8, help="requests computing at once (default 8)")
    lim.add_argument(
        "--max-queued", type=int, default=32, help="requests waiting; more are refused (default 32)"
    )
    lim.add_argument(
        "--max-calls-per-peer", type=int, default=16, help="admitted calls per client address (default 16)"
    )
    lim.add_argument(
        "--memory-budget-mb", type=int, default=8192, help="image+mask buffers, all requests (default 8192)"
    )
    lim.add_argument(
        "--max-peer-upload-mb",
        type=int,
        default=0,
        help="upload bytes one client address may declare in calls in progress beyond its first "
        "(default 0: half of --memory-budget-mb)",
    )
    lim.add_argument(
        "--chunk-kb", type=int, default=1024, help="largest upload chunk / mask chunk (default 1024)"
    )
    lim.add_argument("--max-image-pixels", type=int, default=1 << 30, help="pixels per image (default 2^30)")
    lim.add_argument(
        "--max-tile-pixels", type=int, default=2048 * 2048, help="pixels per SegmentTile call (default 2^22)"
    )
    lim.add_argument(
        "--max-inputs",
        type=int,
        default=0,
        help="model inputs per request (default 0: what the largest square image within --max-image-pixels "
        "needs)",
    )
    lim.add_argument(
        "--max-encoded-mb", type=int, default=2048, help="largest PNG/TIFF upload (default 2048)"
    )
    lim.add_argument(
        "--upload-idle-s", type=float, default=30.0, help="longest pause in an upload (default 30)"
    )
    lim.add_argument(
        "--upload-min-rate-kb", type=float, default=1024.0, help="slowest upload, KiB/s (default 1024)"
    )
    lim.add_argument(
        "--spool-budget-mb", type=int, default=8192, help="encoded uploads on disk (default 8192)"
    )
    lim.add_argument("--tmp-dir", type=Path, default=None, help="spool folder's parent (system temp)")
    lim.add_argument(
        "--grace", type=float, default=30.0, help="seconds in-flight calls get on shutdown (default 30)"
    )
    jobs = p.add_argument_group("jobs")
    jobs.add_argument("--job-root", type=Path, action="append", default=[], help="folder jobs may read")
    jobs.add_argument("--output-root", type=Path, default=None, help="write job outputs here, not beside")
    jobs.add_argument(
        "--job-db",
        default=None,
        help="SQLite file of job state, used only with --job-root (without it jobs are off and nothing is "
        "opened; default: $XDG_STATE_HOME/samsem/jobs.sqlite, i.e. ~/.local/state/samsem/jobs.sqlite; "
        "'none': in memory, jobs are lost at exit)",
    )
    sec = p.add_argument_group("security")
    sec.add_argument("--tls-cert", type=Path, default=None, help="server certificate chain (PEM)")
    sec.add_argument("--tls-key", type=Path, default=None, help="server private key (PEM)")
    sec.add_argument("--tls-client-ca", type=Path, default=None, help="require client certs from this CA")
    sec.add_argument("--token-file", type=Path, default=None, help="accepted bearer tokens, one per line")
    sec.add_argument("--token-env", default=None, help="environment variable with accepted tokens (a,b)")
    p.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="default info"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the pipeline and serve until a signal."""
    import asyncio

    from samsem.runtime.config import RunOptions
    from samsem.runtime.load import load_pipeline
    from samsem.server.app import SamsemServer, ServerConfig
    from samsem.server.jobstore import default_path
    from samsem.server.observability import configure_logging, log
    from samsem.server.security import load_tokens

    configure_logging(args.log_level)
    tokens: tuple[str, ...] = ()
    if args.token_file is not None or args.token_env is not None:
        tokens = load_tokens(args.token_file, args.token_env)
    config = ServerConfig(
        host=args.host,
        port=args.port,
        metrics_port=args.metrics_port,
        max_batch=args.max_batch,
        max_delay_ms=args.max_delay_ms,
        request_batch=args.request_batch,
        max_active=args.max_active,
        max_queued=args.max_queued,
        max_calls_per_peer=args.max_calls_per_peer,
        memory_budget=args.memory_budget_mb << 20,
        max_peer_upload=args.max_peer_upload_mb << 20,
        chunk_bytes=args.chunk_kb << 10,
        max_image_pixels=args.max_image_pixels,
        max_tile_pixels=args.max_tile_pixels,
        max_inputs=args.max_inputs,
        max_encoded_bytes=args.max_encoded_mb << 20,
        upload_idle_s=args.upload_idle_s,
        upload_min_rate=args.upload_min_rate_kb * 1024,
        spool_budget=args.spool_budget_mb << 20,
        tmp_dir=args.tmp_dir,
        job_roots=tuple(args.job_root),
        output_root=args.output_root,
        job_db=None if str(args.job_db).lower() == "none" else Path(args.job_db or default_path()),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        tokens=tokens,
        grace_s=args.grace,
        backend=args.backend,
        device=args.device,
        precision=args.precision,
    )
    if args.host not in _LOOPBACK and (config.tls_cert is None or not tokens):
        log(30, "listening beyond loopback without TLS and tokens; anyone who can reach the port can use it")
    options = RunOptions(single_scale=args.single_scale, fallback=args.fallback)
    pipeline = load_pipeline(
        args.model, backend=args.backend, device=args.device, precision=args.precision, options=options
    )
    info = pipeline.info
    source = "" if info is None else f" ({info.source or info.method or info.models[0].source})"
    print(
        f"samsem serve: serving {'a custom model' if info is None else info.family}{source}", file=sys.stderr
    )
    note = None if info is None else info.precision_note(args.precision)
    if note is not None:
        print(f"samsem serve: {note}", file=sys.stderr)
    asyncio.run(SamsemServer(config, pipeline).run_until_signal(args.ready_file))
    return 0
