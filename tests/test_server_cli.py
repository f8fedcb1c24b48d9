"""`samsem client` against an in-process server, and a server process draining on SIGTERM."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
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
import asyncio, sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_server import slow_pipeline
from samsem.server.app import SamsemServer, ServerConfig
from samsem.server.observability import configure_logging
folder = Path(sys.argv[1]).parent

def gate(n):  # the first tile says it is in the model, then waits for the test's release file
    if n == 1:
        (folder / "in-model").touch()
        deadline = time.monotonic() + 120
        while not (folder / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.01)

configure_logging()
pipe, _ = slow_pipeline(delay=0, gate=gate)
config = ServerConfig(port=0, request_batch=1, max_batch=1, grace_s=60, tmp_dir=folder / "spool")
asyncio.run(SamsemServer(config, pipe).run_until_signal(Path(sys.argv[1])))
"""


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def _wait_for(cond, what: str, timeout: float = 120) -> None:
    """Wait for an event the test can observe; ``timeout`` only bounds a run that went wrong."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not seen within {timeout} s: {what}")
        time.sleep(0.01)


def test_server_process_drains_in_flight_calls_on_sigterm(tmp_path: Path) -> None:
    """SIGTERM lands while the call's first tile is in the model (it waits there until the server has
    logged that it drains), so the call is in flight when the drain begins on any machine."""
    script = SLOW_SERVER.format(tests=str(Path(__file__).parent))
    proc, address = start_server(tmp_path, command=[sys.executable, "-c", script])
    log_path = tmp_path / "server.log"
    try:
        image = lines_image(400, 400, seed=4)  # 64 tiles
        out: dict = {}

        def request() -> None:
            with SamsemClient(address) as client:
                try:
                    out["result"] = client.segment(image, timeout=300)
                except grpc.RpcError as exc:
                    out["error"] = exc

        t = threading.Thread(target=request)
        t.start()
        _wait_for((tmp_path / "in-model").exists, "the call's first tile in the model")
        proc.send_signal(signal.SIGTERM)
        _wait_for(lambda: any(e["msg"] == "draining" for e in _log(log_path)), "'draining' in the log")
        (tmp_path / "release").touch()
        t.join(300)
        assert not t.is_alive() and "error" not in out, out.get("error")
        expected = slow_pipeline()[0].segment(image).mask
        np.testing.assert_array_equal(out["result"].mask, expected)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    logs = _log(log_path)
    messages = [entry["msg"] for entry in logs]
    assert messages[-1] == "stopped", log_path.read_text()[-3000:]
    assert "Segment OK" in messages, log_path.read_text()[-3000:]
    assert messages.index("serving") < messages.index("draining") < messages.index("Segment OK")
    (ok,) = [e for e in logs if e["msg"] == "Segment OK"]
    assert ok["request_id"] == out["result"].request_id and ok["tiles"] == out["result"].report["n_patches"]


def test_client_reads_a_segment_call_to_its_status() -> None:
    """The client returns only after the server's status has come (a call left open after the report
    ends as cancelled on the server, which then may not have logged it yet: the SIGTERM test's
    missing "Segment OK", issue 25.5)."""
    import zlib

    from samsem.server.client import collect_segment

    mask = np.ones((2, 3), np.uint8)
    ended = []

    def stream():
        yield pb.SegmentResponse(progress=pb.Progress(tiles_done=1, tiles_total=1))
        chunk = pb.MaskChunk(height=2, width=3, offset=0, length=6, zlib_data=zlib.compress(mask.tobytes()))
        yield pb.SegmentResponse(mask=chunk)
        yield pb.SegmentResponse(report=pb.SegmentReport(name="x", report_json="{}", request_id="r"))
        ended.append(True)  # reached once the caller asks past the report: the stream's end

    out = collect_segment(stream(), None)
    np.testing.assert_array_equal(out.mask, mask)
    assert out.request_id == "r" and ended == [True]


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
