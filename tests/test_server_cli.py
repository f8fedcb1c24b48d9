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
from test_server import lines_image, slow_pipeline
from test_server_large import start_server

from samsem.cli import main
from samsem.io import read_mask, write_image
from samsem.runtime.load import load_pipeline
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
    assert messages[0] == "serving" and messages[-1] == "stopped"
    assert messages.index("draining") < messages.index("Segment OK")
    (ok,) = [e for e in logs if e["msg"] == "Segment OK"]
    assert ok["request_id"] == out["result"].request_id and ok["tiles"] == out["result"].report["n_patches"]
