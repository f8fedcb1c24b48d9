"""`samsem client` against an in-process server, and a server process draining on SIGTERM."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
from test_server import lines_image, rpc_error, slow_pipeline
from test_server_large import start_server

from samsem.cli import main
from samsem.io import read_mask, write_image
from samsem.runtime.load import load_pipeline
from samsem.server import samsem_pb2 as pb
from samsem.server.app import ServerConfig, ServerThread
from samsem.server.client import SamsemClient


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "in"
    folder.mkdir()
    paths = [folder / "a.png", folder / "b.tif"]
    for i, p in enumerate(paths):
        write_image(p, lines_image(300 + 50 * i, 420, seed=20 + i))
    return paths


def test_client_segment_writes_what_segment_writes(images, tmp_path, capsys) -> None:
    local = ["segment", str(images[0].parent), "-o", str(tmp_path / "local"), "--model", "classical"]
    assert main(local) == 0
    with ServerThread(ServerConfig(port=0), load_pipeline("classical")) as srv:
        args = [
            "client",
            "segment",
            str(images[0].parent),
            "--server",
            srv.address,
            "-o",
            str(tmp_path / "remote"),
        ]
        assert main(args) == 0
        for p in images:
            local = read_mask(tmp_path / "local" / f"{p.stem}.mask.png")
            np.testing.assert_array_equal(read_mask(tmp_path / "remote" / f"{p.stem}.mask.png"), local)
            report = json.loads((tmp_path / "remote" / f"{p.stem}.report.json").read_text())
            assert report["server"] == srv.address and report["input"] == str(p)
        assert main(args) == 0  # outputs exist: skipped
        assert "0 segmented, 2 skipped" in capsys.readouterr().err
        bad = images[0].parent / "c.png"
        bad.write_bytes(images[0].read_bytes()[:100])
        assert main([*args, "--option", "seed=3"]) == 1
        err = capsys.readouterr().err
        assert "FAILED c.png: INVALID_ARGUMENT: png data: corrupt or truncated PNG" in err
        assert main(["client", "info", "--server", srv.address]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["health"] == "SERVING" and info["manifest"] == {
            "family": "classical",
            "method": "sauvola",
        }


def test_client_job_waits_for_the_result(images, tmp_path, capsys) -> None:
    cfg = ServerConfig(port=0, job_roots=(images[0].parent,), output_root=tmp_path / "out")
    with ServerThread(cfg, load_pipeline("classical")) as srv:
        assert main(["client", "job", str(images[1]), "--wait", "--server", srv.address]) == 0
        job = json.loads(capsys.readouterr().out)
        assert job["state"] == "JOB_SUCCEEDED" and job["files"][0]["state"] == "FILE_DONE"
        assert Path(job["files"][0]["mask_path"]) == tmp_path / "out" / "b.mask.png"
        assert main(["client", "job", "/etc/passwd", "--server", srv.address]) == 1
        assert "PERMISSION_DENIED" in capsys.readouterr().err


SLOW_SERVER = """
import asyncio, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_server import slow_pipeline
from samsem.server.app import SamsemServer, ServerConfig
from samsem.server.observability import configure_logging
configure_logging()
pipe, _ = slow_pipeline(delay=0.03)
config = ServerConfig(port=0, request_batch=1, max_batch=1, grace_s=60)
asyncio.run(SamsemServer(config, pipe).run_until_signal(Path(sys.argv[1])))
"""


def test_server_process_drains_in_flight_calls_on_sigterm(tmp_path: Path) -> None:
    script = SLOW_SERVER.format(tests=str(Path(__file__).parent))
    proc, address = start_server(tmp_path, command=[sys.executable, "-c", script])
    try:
        image = lines_image(400, 400, seed=4)  # 64 tiles of 30 ms
        started = threading.Event()
        out: dict = {}

        def request() -> None:
            with SamsemClient(address) as client:
                try:
                    out["result"] = client.segment(image, progress=lambda d, t: d > 0 and started.set())
                except grpc.RpcError as exc:
                    out["error"] = exc

        t = threading.Thread(target=request)
        t.start()
        assert started.wait(60)
        proc.send_signal(signal.SIGTERM)
        t.join(60)
        assert "error" not in out, out.get("error")
        expected = slow_pipeline()[0].segment(image).mask
        np.testing.assert_array_equal(out["result"].mask, expected)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    logs = [
        json.loads(line)
        for line in (tmp_path / "server.log").read_text().splitlines()
        if line.startswith("{")
    ]
    messages = [entry["msg"] for entry in logs]
    assert messages[0] == "serving" and messages[-1] == "stopped", messages
    assert "Segment OK" in messages, (tmp_path / "server.log").read_text()[-3000:]
    assert messages.index("draining") < messages.index("Segment OK")
    (ok,) = [e for e in logs if e["msg"] == "Segment OK"]
    assert ok["request_id"] == out["result"].request_id and ok["tiles"] == out["result"].report["n_patches"]


def test_client_segment_writes_vector_files_beside_the_mask(images, tmp_path, capsys) -> None:
    from samsem.vector import read_layout_mask

    out = tmp_path / "remote"
    with ServerThread(ServerConfig(port=0), load_pipeline("classical")) as srv:
        args = ["client", "segment", str(images[0]), "--server", srv.address, "-o", str(out)]
        vec = ["--vector", "svg,geojson,gds", "--tolerance", "0", "--nm-per-px", "4", "--gds-layer", "7"]
        assert main([*args, *vec]) == 0
        mask = read_mask(out / "a.mask.png")
        for name in ("a.mask.svg", "a.mask.geojson"):  # named as the local command names them
            np.testing.assert_array_equal(read_layout_mask(out / name), mask)
        gds = read_layout_mask(out / "a.mask.gds", mask.shape, gds_layer=7, nm_per_px=4.0)
        np.testing.assert_array_equal(gds, mask)
        report = json.loads((out / "a.report.json").read_text())
        assert {fmt: v["file"] for fmt, v in report["vectors"].items()} == {
            "svg": "a.mask.svg",
            "geojson": "a.mask.geojson",
            "gds": "a.mask.gds",
        }
        assert main([*args, *vec]) == 0 and "0 segmented, 1 skipped" in capsys.readouterr().err
        (out / "a.mask.gds").unlink()  # an output missing: the image is done again
        assert main([*args, *vec]) == 0 and "1 segmented" in capsys.readouterr().err
        assert main([*args, "--vector", "dxf"]) == 2


def test_vectors_stream_in_pieces_equal_to_local_files(tmp_path) -> None:
    from samsem.vector import VectorOptions, write_vectors

    pipe = load_pipeline("classical")
    image = lines_image(300, 400, seed=3)
    opts = VectorOptions(formats=("svg", "geojson"), tolerance_px=1.0)
    with (
        ServerThread(ServerConfig(port=0, chunk_bytes=2048), pipe) as srv,
        SamsemClient(srv.address, chunk_bytes=2048) as client,
    ):
        out = client.segment(image, name="img", vector=opts)
        err = rpc_error(lambda: client.segment_tile(image, vector=opts))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "Segment call" in err.details()
        bad = VectorOptions(formats=("svg",))
        request = client.stub.Segment
        header = pb.ImageHeader(name="x", raw=pb.RawLayout(dtype="uint8", height=8, width=8))
        header.vector.formats.append("dxf")
        err = rpc_error(lambda: list(request(iter([pb.SegmentRequest(header=header)]))))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "unknown vector format" in err.details()
        assert bad.formats == ("svg",)
    local = write_vectors(pipe.segment(image).mask, tmp_path, "img", opts)
    assert out.vectors.keys() == {"svg", "geojson"} and len(out.vectors["svg"]) > 2048
    for fmt, path in local.items():
        assert out.vectors[fmt] == path.read_bytes()
    assert out.report["vectors"] == {fmt: len(data) for fmt, data in out.vectors.items()}
