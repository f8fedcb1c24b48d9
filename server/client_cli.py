"""`samsem client`: segment local images on a remote server, show its model, run server-side jobs."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from pathlib import Path

TOKEN_ENV = "SAMSEM_TOKEN"


def _connection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", required=True, help="HOST:PORT of the samsem server")
    p.add_argument("--tls", action="store_true", help="use TLS (system roots unless --ca)")
    p.add_argument("--ca", type=Path, default=None, help="CA certificate to trust (PEM; implies --tls)")
    p.add_argument("--cert", type=Path, default=None, help="client certificate for mutual TLS (PEM)")
    p.add_argument("--key", type=Path, default=None, help="client private key for mutual TLS (PEM)")
    p.add_argument("--token", default=None, help=f"bearer token (default: ${TOKEN_ENV})")
    p.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="read the bearer token from this file (the server's token file format: its first token; "
        "blank and # lines ignored)",
    )
    p.add_argument("--timeout", type=float, default=None, help="deadline of each call in seconds")


def _vector_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("vector output (polygons of the mask, see docs/vector.md)")
    g.add_argument(
        "--vector",
        default=None,
        metavar="FORMATS",
        help="also write NAME.mask.svg / .geojson / .gds beside each mask (comma-separated formats)",
    )
    g.add_argument(
        "--tolerance",
        type=float,
        default=1.0,
        help="simplification tolerance in px (default 1; 0: exact); two lines' polygons stay >= 0.5 px apart",
    )
    g.add_argument(
        "--nm-per-px", type=float, default=1.0, help="pixel size for GDSII coordinates (default 1)"
    )
    g.add_argument("--gds-layer", type=int, default=0, help="GDSII layer of the polygons (default 0)")
    g.add_argument("--gds-datatype", type=int, default=0, help="GDSII datatype of the polygons (default 0)")


def _vector_options(args: argparse.Namespace):
    """The VectorOptions the flags ask for, or None without --vector (ConfigError if invalid)."""
    if not args.vector:
        return None
    from samsem.vector import VectorOptions

    formats = tuple(f.strip().lower() for f in args.vector.split(",") if f.strip())
    return VectorOptions(
        formats=formats,
        tolerance_px=args.tolerance,
        nm_per_px=args.nm_per_px,
        gds_layer=args.gds_layer,
        gds_datatype=args.gds_datatype,
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``client`` subcommand with its ``segment``, ``info`` and ``job`` actions."""
    p = sub.add_parser("client", help="use a remote samsem server", description=__doc__.splitlines()[0])
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    seg = actions.add_parser("segment", help="segment local images on the server")
    seg.add_argument("inputs", nargs="+", help="image files (PNG/TIFF), directories or globs")
    seg.add_argument("-o", "--out", required=True, type=Path, help="output directory")
    seg.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="pipeline option")
    seg.add_argument("--overwrite", action="store_true", help="recompute images whose outputs exist")
    _vector_flags(seg)
    _connection(seg)
    seg.set_defaults(func=run_segment)

    info = actions.add_parser("info", help="print the server's model and limits")
    _connection(info)
    info.set_defaults(func=run_info)

    job = actions.add_parser("job", help="segment files on the server's disk (paths under its roots)")
    job.add_argument("paths", nargs="*", help="absolute server-side paths to submit")
    job.add_argument("--status", metavar="JOB_ID", default=None, help="show a job instead of submitting")
    job.add_argument("--cancel", metavar="JOB_ID", default=None, help="cancel a job instead of submitting")
    job.add_argument("--list", action="store_true", help="list the server's jobs (newest first)")
    job.add_argument("--wait", action="store_true", help="follow the job until it finishes")
    job.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="pipeline option")
    job.add_argument("--overwrite", action="store_true", help="recompute files whose outputs exist")
    _vector_flags(job)
    _connection(job)
    job.set_defaults(func=run_job)


def _options(pairs: list[str]) -> dict[str, str]:
    from samsem.errors import ConfigError

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option expects KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def _client(args: argparse.Namespace):
    from samsem.server.client import SamsemClient
    from samsem.server.security import client_token

    token = args.token
    if token is None and args.token_file is not None:
        token = client_token(args.token_file)
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    return SamsemClient(
        args.server, tls=args.tls, ca=args.ca, cert=args.cert, key=args.key, token=token, timeout=args.timeout
    )


def rpc_message(exc, server: str | None = None) -> str:
    import grpc

    if exc.code() == grpc.StatusCode.UNAVAILABLE and server is not None:
        detail = str(exc.details() or "")
        verify = re.search(r"CERTIFICATE_VERIFY_FAILED:? ?([^:]*)", detail)
        if verify:
            why = verify.group(1).strip() or "not trusted"
            return (
                f"cannot connect to the samsem server at {server}: TLS verification of its certificate "
                f"failed ({why}); is --ca the CA that signed it?"
            )
        handshake = re.search(r"(?i)handshake failed.*?OPENSSL_internal:([A-Z_]+)", detail)
        if handshake:
            return (
                f"cannot connect to the samsem server at {server}: TLS handshake failed "
                f"({handshake.group(1)}); check --tls/--ca and, for mutual TLS, --cert/--key"
            )
        parts = [p.strip() for p in detail.split(": ") if p.strip() not in ("", "OK")]
        reason = parts[-1] if parts else "no reason given"  # e.g. "Connection refused"
        hint = "is `samsem serve` running there?"
        if reason == "Socket closed":
            hint = "does it use TLS (--tls/--ca) or require a client certificate (--cert/--key)?"
        return f"cannot connect to the samsem server at {server} ({reason}); {hint}"
    return f"{exc.code().name}: {exc.details()}"


def run_segment(args: argparse.Namespace) -> int:
    """Send every input to the server; write NAME.mask.png/.tif and NAME.report.json like `samsem segment`
    (and NAME.mask.svg/.geojson/.gds with --vector, before the report, which is written last)."""
    import grpc
    from tqdm import tqdm

    from samsem.errors import SamsemError
    from samsem.io import atomic_path, list_images
    from samsem.runtime.outputs import (
        RunSummary,
        check_distinct_names,
        plan_image,
        prepare_dir,
        remove_stale_temps,
        write_outputs,
    )

    options = _options(args.option)
    vector = _vector_options(args)
    files = list_images(args.inputs)
    check_distinct_names(files)
    prepare_dir(args.out)
    remove_stale_temps(args.out, (f.stem for f in files))
    summary = RunSummary()
    with _client(args) as client, tqdm(total=0, unit="tile", desc="segment", disable=None) as bar:
        for f in files:
            try:
                outputs, _, _ = plan_image(f, args.out, vector=vector.formats if vector else ())
            except SamsemError as exc:
                summary.failures[f.name] = str(exc)
                continue
            if not args.overwrite and outputs.finished():
                summary.skipped += 1
                continue
            seen = {"total": 0, "done": 0}

            def progress(n_done: int, n_total: int, seen=seen) -> None:
                if n_total != seen["total"]:
                    bar.total += n_total - seen["total"]
                    seen["total"] = n_total
                    bar.refresh()
                bar.update(n_done - seen["done"])
                seen["done"] = n_done

            try:
                out = client.segment(f, options=options, progress=progress, vector=vector)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE:  # no server: say so once, not per file
                    print(f"samsem client: {rpc_message(exc, args.server)}", file=sys.stderr)
                    if summary.done:  # the server went away during the run
                        summary.report("samsem client", args.out)
                    return 1
                summary.failures[f.name] = rpc_message(exc)
                continue
            except SamsemError as exc:
                summary.failures[f.name] = str(exc)
                continue
            report = {**out.report, "server": args.server}
            for fmt, path in outputs.vectors:  # the server's vector files, as the local command names them
                with atomic_path(path) as tmp:
                    tmp.write_bytes(out.vectors[fmt])
            if outputs.vectors:
                report["vectors"] = {fmt: {"file": p.name} for fmt, p in outputs.vectors}
            write_outputs(dataclasses.replace(outputs, vectors=()), out.mask, report, protect=files)
            summary.done += 1
    return summary.report("samsem client", args.out)


def run_info(args: argparse.Namespace) -> int:
    """Print GetModelInfo as JSON."""
    import json

    import grpc
    from google.protobuf.json_format import MessageToDict

    try:
        with _client(args) as client:
            info = client.model_info()
            status = client.health()
    except grpc.RpcError as exc:
        print(f"samsem client info: {rpc_message(exc, args.server)}", file=sys.stderr)
        return 1
    data = MessageToDict(info, preserving_proto_field_name=True)
    for key in ("manifest_json", "config_json"):
        data[key.removesuffix("_json")] = json.loads(data.pop(key, "{}"))
    print(json.dumps({"health": status, **data}, indent=2))
    return 0


def run_job(args: argparse.Namespace) -> int:
    """Submit (or show / cancel) a server-side job; with --wait follow it and return 1 unless it succeeded."""
    import grpc
    from google.protobuf.json_format import MessageToJson

    from samsem.errors import ConfigError
    from samsem.server import samsem_pb2 as pb

    if sum(bool(x) for x in (args.paths, args.status, args.cancel, args.list)) != 1:
        raise ConfigError("give either PATH... to submit, or --status JOB_ID, --cancel JOB_ID or --list")
    vector = _vector_options(args)
    try:
        with _client(args) as client:
            if args.list:
                for listed in client.list_jobs():
                    print(MessageToJson(listed, preserving_proto_field_name=True, indent=None))
                return 0
            if args.status:
                job = client.get_job(args.status)
            elif args.cancel:
                job = client.cancel_job(args.cancel)
            else:
                job = client.submit_job(
                    args.paths, options=_options(args.option), overwrite=args.overwrite, vector=vector
                )
                print(f"samsem client: job {job.job_id} submitted ({len(job.files)} files)", file=sys.stderr)
            if args.wait:
                for snap in client.watch_job(job.job_id):
                    print(
                        f"  {pb.JobState.Name(snap.state)}: {snap.tiles_done}/{snap.tiles_total} tiles",
                        file=sys.stderr,
                    )
                    job = snap
    except grpc.RpcError as exc:
        print(f"samsem client job: {rpc_message(exc, args.server)}", file=sys.stderr)
        return 1
    print(MessageToJson(job, preserving_proto_field_name=True))
    if args.wait:
        return 0 if job.state == pb.JOB_SUCCEEDED else 1
    return 0
