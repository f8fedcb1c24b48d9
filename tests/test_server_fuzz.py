"""A seeded fuzz of the gRPC surface on loopback: a few hundred malformed or odd requests, each of which
must end with a deliberate status (never INTERNAL or UNKNOWN), after which the server still serves,
holds nothing, and has written nothing outside its job root. Among them: job paths the operating system
refuses (ENAMETOOLONG, ELOOP, ENOTDIR, ENOENT, a FIFO, a link out of the root) and numbers in options
beyond every range (issue 25.1)."""

from __future__ import annotations

import os
import random
import struct
import time
from pathlib import Path

import grpc
import numpy as np
from test_server import lines_image, serving

from samsem.io import write_image
from samsem.runtime.config import MAX_FLATTEN, REQUEST_OPTIONS
from samsem.runtime.load import load_pipeline
from samsem.server import samsem_pb2 as pb
from samsem.server.app import ServerConfig

SERVICE = "/samsem.v1.Segmentation/"
CASES = 300
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
UNARY = ("SegmentTile", "SubmitJob", "GetJob", "CancelJob", "ListJobs", "GetModelInfo")


def _text(rng: random.Random) -> str:
    pick = rng.randrange(6)
    if pick == 0:
        return ""
    if pick == 1:
        return "x" * rng.choice([1, 300, 5000, 70_000])
    if pick == 2:
        return "".join(chr(rng.randrange(1, 0x2FF)) for _ in range(rng.randrange(1, 40)))
    if pick == 3:
        return "a\x00b"
    if pick == 4:
        return rng.choice(["png", "tiff", "uint8", "uint16", "seed", "single_scale", "../..", "/etc/passwd"])
    return "".join(rng.choice("abcdef0123456789") for _ in range(rng.randrange(1, 40)))


def _number(rng: random.Random) -> str:
    """A number as a request spells it: in range, beyond 64 bits, negative, not finite, malformed."""
    return rng.choice(
        [
            str(rng.randrange(0, 1 << 20)),
            str(1 << 64),
            str(rng.randrange(1 << 64, 1 << 200)),
            str(-rng.randrange(1, 1 << 70)),
            str(MAX_FLATTEN + 1),
            "9" * rng.choice([20, 255, 400]),
            rng.choice(["nan", "inf", "-inf", "1e400", "-0", "1e-400", "0.5", "1.5", "-0.5"]),
            rng.choice(["0x10", " 7", "1_000", "", "+3", "1e9"]),
        ]
    )


def _path(rng: random.Random, root: Path) -> str:
    """A job path the operating system refuses: a component over 255 bytes, a path over PATH_MAX, a
    symlink loop, a path through a file, a missing folder, a link leaving the root."""
    return rng.choice(
        [
            str(root / ("x" * rng.choice([256, 300, 1000])) / "a.png"),
            str(root / ("y" * rng.choice([256, 4000]))),
            str(root / "/".join(["d" * 200] * 25)),
            str(root / "loop" / "a.png"),
            str(root / "loop"),
            str(root / "a.png" / "b.png"),
            str(root / "missing" / "a.png"),
            str(root / "out" / "secret.png"),
            str(root / "fifo"),
        ]
    )


def _header(rng: random.Random) -> pb.ImageHeader:
    header = pb.ImageHeader(name=_text(rng) if rng.random() < 0.3 else "f")
    kind = rng.randrange(3)
    if kind == 0:
        header.raw.CopyFrom(
            pb.RawLayout(
                dtype=rng.choice(["uint8", "uint16", "float32", _text(rng)]),
                height=rng.choice([0, 1, 7, 64, 200, 70000, 2**32 - 1]),
                width=rng.choice([0, 1, 9, 64, 150, 100000, 2**32 - 1]),
            )
        )
    elif kind == 1:
        header.encoded.CopyFrom(
            pb.EncodedLayout(
                format=rng.choice(["png", "tiff", "bmp", _text(rng)]), size=rng.randrange(0, 1 << 34)
            )
        )
    if rng.random() < 0.3:
        header.options[_text(rng)] = _text(rng)
    if rng.random() < 0.3:
        header.options[rng.choice(list(REQUEST_OPTIONS))] = _number(rng)
    if rng.random() < 0.2:
        header.vector.formats.append(rng.choice(["svg", "gds", "dxf", _text(rng)]))
        if rng.random() < 0.5:
            header.vector.tolerance_px = rng.choice([-1.0, 0.0, 2.0, float("nan"), 1e300])
        if rng.random() < 0.3:
            header.vector.nm_per_px = rng.choice([0.0, -2.0, 1e-300, 1e300, float("inf"), float("nan")])
        if rng.random() < 0.3:
            header.vector.gds_layer = rng.choice([1, 255, 256, 65535, 65536, 2**32 - 1])
            header.vector.gds_datatype = rng.choice([0, 255, 256, 2**32 - 1])
    return header


def _chunks(rng: random.Random, header: pb.ImageHeader) -> list[pb.SegmentRequest]:
    """Bytes after the header: right, short, long, garbage, or with a second header."""
    if header.WhichOneof("layout") == "raw" and header.raw.dtype in ("uint8", "uint16"):
        n = header.raw.height * header.raw.width * (2 if header.raw.dtype == "uint16" else 1)
    elif header.WhichOneof("layout") == "encoded":
        n = min(header.encoded.size, 4096)
    else:
        n = rng.randrange(0, 100)
    n = min(n, 1 << 16)
    data = bytes(rng.randrange(256) for _ in range(min(n, 512))) * (n // 512 + 1)
    data = data[:n]
    mode = rng.randrange(5)
    if mode == 1:
        data = data[: max(0, n - rng.randrange(1, 50))]
    elif mode == 2:
        data += b"\x00" * rng.randrange(1, 50)
    elif mode == 3 and header.WhichOneof("layout") == "encoded":
        data = (
            b"\x89PNG\r\n\x1a\n"
            + struct.pack(">I", 13)
            + b"IHDR"
            + bytes(rng.randrange(256) for _ in range(17))
        )
    parts = [pb.SegmentRequest(chunk=data[i : i + 8192]) for i in range(0, len(data), 8192)]
    if mode == 4:
        parts.insert(rng.randrange(len(parts) + 1), pb.SegmentRequest(header=header))
    return parts


def _call(client, rng: random.Random, root: Path) -> grpc.StatusCode:
    """One random call; returns its status code."""
    kind = rng.randrange(6)
    try:
        if kind == 0:  # raw bytes to a unary method
            rpc = client.channel.unary_unary(SERVICE + rng.choice(UNARY))
            rpc(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64))), timeout=10)
        elif kind == 1:  # raw bytes as a Segment stream
            rpc = client.channel.stream_stream(SERVICE + "Segment")
            msgs = [bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64))) for _ in range(3)]
            list(rpc(iter(msgs), timeout=10))
        elif kind == 2:  # a Segment upload with a random header and bytes
            header = _header(rng)
            requests = [pb.SegmentRequest(header=header), *_chunks(rng, header)]
            list(client.stub.Segment(iter(requests), timeout=10, metadata=client._md(None)))
        elif kind == 3:  # a tile with a random header
            header = _header(rng)
            data = b"".join(c.chunk for c in _chunks(rng, header))
            client.stub.SegmentTile(pb.SegmentTileRequest(header=header, data=data), timeout=10)
        elif kind == 4:  # a job with odd paths
            paths = [
                rng.choice(
                    [
                        _text(rng),
                        str(root / "a.png"),
                        str(root / ".." / "secret.png"),
                        str(root) + "/" + _text(rng),
                        "/proc/self/environ",
                        str(root),
                        _path(rng, root),
                        _path(rng, root),
                    ]
                )
                for _ in range(rng.randrange(0, 3))
            ]
            pick = rng.random()
            options = (
                {_text(rng): _text(rng)}
                if pick < 0.2
                else {rng.choice(list(REQUEST_OPTIONS)): _number(rng)}
                if pick < 0.5
                else None
            )
            client.submit_job(paths, options=options)
        elif rng.random() < 0.2:  # a list of any length
            client.stub.ListJobs(
                pb.ListJobsRequest(limit=rng.choice([1, 1000, 2**31, 2**32 - 1])), timeout=10
            )
        else:  # job ids
            job_id = _text(rng)
            rng.choice([client.get_job, client.cancel_job, lambda j: list(client.watch_job(j, timeout=10))])(
                job_id
            )
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_fuzzed_requests_never_crash_or_leak(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    write_image(root / "a.png", lines_image(64, 64))
    (outside / "secret.png").write_bytes(b"not for the server")
    (root / "loop").symlink_to(root / "loop")
    (root / "out").symlink_to(outside)
    os.mkfifo(root / "fifo")
    cfg = ServerConfig(
        port=0,
        job_roots=(root,),
        tmp_dir=tmp_path / "spool",
        max_image_pixels=256 * 256,
        max_tile_pixels=128 * 128,
        max_encoded_bytes=1 << 20,
        upload_idle_s=2.0,
    )
    rng = random.Random(17)
    seen: dict[grpc.StatusCode, int] = {}
    with serving(cfg, load_pipeline("classical")) as (srv, client):
        for i in range(CASES):
            code = _call(client, rng, root)
            seen[code] = seen.get(code, 0) + 1
            assert code in ALLOWED, f"case {i}: {code}"
        assert client.health() == "SERVING"
        out = client.segment(lines_image(100, 120))
        assert out.mask.shape == (100, 120) and np.isin(out.mask, (0, 1)).all()
        t0 = time.monotonic()  # the last call's slot is freed just after its reply
        while srv.server.admission.admitted or srv.server.spool.used or srv.server.jobs.running():
            assert time.monotonic() - t0 < 30, "a call or job still holds the server"
            time.sleep(0.01)
    assert sorted(p.name for p in outside.iterdir()) == ["secret.png"]
    assert seen.get(grpc.StatusCode.INVALID_ARGUMENT, 0) > CASES // 3  # the fuzz does reach the checks
