"""Server-side jobs: confinement to roots, outputs beside inputs or under an output root, skipping,
per-file failures, cancellation and jobs that outlive their client."""

from __future__ import annotations

import os
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from test_server import lines_image, rpc_error, serving, slow_pipeline

from samsem.io import read_image, read_mask, write_image
from samsem.runtime.load import load_pipeline
from samsem.server import samsem_pb2 as pb
from samsem.server.app import ServerConfig, ServerThread
from samsem.server.client import SamsemClient


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """root/{a.png, b.tif, sub/c.png, link.png -> outside}, outside/d.png."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    paths = {
        "a": root / "a.png",
        "b": root / "b.tif",
        "c": root / "sub" / "c.png",
        "d": outside / "d.png",
    }
    for i, p in enumerate(paths.values()):
        write_image(p, lines_image(300, 260 + 20 * i, seed=i))
    os.symlink(paths["d"], root / "link.png")
    return {"root": root, "outside": outside, "link": root / "link.png", **paths}


def _final(client: SamsemClient, job_id: str) -> pb.Job:
    *_, last = client.watch_job(job_id, timeout=60)
    return last


def test_job_writes_masks_beside_inputs_equal_to_local(tree) -> None:
    pipe = load_pipeline("classical")
    with serving(ServerConfig(port=0, job_roots=(tree["root"],)), pipe) as (_, client):
        job = client.submit_job([str(tree["a"]), str(tree["b"]), str(tree["root"] / "sub")])
        assert job.state in (pb.JOB_QUEUED, pb.JOB_RUNNING) and len(job.files) == 3
        done = _final(client, job.job_id)
        assert done.state == pb.JOB_SUCCEEDED and done.error == ""
        assert [f.state for f in done.files] == [pb.FILE_DONE] * 3
        assert done.tiles_done == done.tiles_total > 0
        for key in ("a", "b", "c"):
            src = tree[key]
            status = next(f for f in done.files if f.input == str(src))
            assert Path(status.mask_path) == src.parent / f"{src.stem}.mask.png"
            expected = pipe.segment(read_image(src)).mask
            np.testing.assert_array_equal(read_mask(status.mask_path), expected)
            assert Path(status.report_path).is_file()
        assert client.get_job(job.job_id) == done
        again = _final(client, client.submit_job([str(tree["a"])]).job_id)
        assert again.state == pb.JOB_SUCCEEDED and again.files[0].state == pb.FILE_SKIPPED
        forced = _final(client, client.submit_job([str(tree["a"])], overwrite=True).job_id)
        assert forced.files[0].state == pb.FILE_DONE


def test_output_root_mirrors_the_tree(tree, tmp_path) -> None:
    out = tmp_path / "results"
    cfg = ServerConfig(port=0, job_roots=(tree["root"],), output_root=out)
    with ServerThread(cfg, load_pipeline("classical")) as srv, SamsemClient(srv.address) as client:
        done = _final(client, client.submit_job([str(tree["a"]), str(tree["c"])]).job_id)
    assert done.state == pb.JOB_SUCCEEDED
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.*")) == [
        "a.mask.png",
        "a.report.json",
        "sub/c.mask.png",
        "sub/c.report.json",
    ]
    assert not list(tree["root"].rglob("*.mask.png"))


def test_paths_outside_the_roots_are_refused(tree, tmp_path) -> None:
    with serving(ServerConfig(port=0, job_roots=(tree["root"],)), load_pipeline("classical")) as (_, client):
        for path in (tree["d"], tree["link"], tree["root"] / ".." / "outside" / "d.png", tree["outside"]):
            err = rpc_error(lambda path=path: client.submit_job([str(tree["a"]), str(path)]))
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "outside the server's job roots; refused" in err.details()
        err = rpc_error(lambda: client.submit_job(["root/a.png"]))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "must be absolute" in err.details()
        err = rpc_error(lambda: client.submit_job([str(tree["root"] / "missing.png")]))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "file not found" in err.details()
        err = rpc_error(lambda: client.submit_job([str(tree["a"])], options={"nope": "1"}))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "unknown option" in err.details()
        assert rpc_error(lambda: client.get_job("no-such-job")).code() == grpc.StatusCode.NOT_FOUND
    assert not list(tree["outside"].glob("*.mask.png"))
    with (
        ServerThread(ServerConfig(port=0), load_pipeline("classical")) as srv,
        SamsemClient(srv.address) as client,
    ):
        err = rpc_error(lambda: client.submit_job([str(tree["a"])]))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "--job-root" in err.details()


def test_a_bad_file_fails_alone(tree) -> None:
    bad = tree["root"] / "broken.png"
    bad.write_bytes(tree["a"].read_bytes()[:200])
    with serving(ServerConfig(port=0, job_roots=(tree["root"],)), load_pipeline("classical")) as (_, client):
        done = _final(client, client.submit_job([str(bad), str(tree["a"])]).job_id)
    assert done.state == pb.JOB_FAILED
    states = {Path(f.input).name: (f.state, f.error) for f in done.files}
    assert states["a.png"] == (pb.FILE_DONE, "")
    assert states["broken.png"][0] == pb.FILE_FAILED and "truncated" in states["broken.png"][1]


def test_job_outlives_its_client_and_can_be_cancelled(tree) -> None:
    pipe, seg = slow_pipeline(delay=0.02)
    with ServerThread(ServerConfig(port=0, job_roots=(tree["root"],)), pipe) as srv:
        with SamsemClient(srv.address) as first:
            job_id = first.submit_job([str(tree["a"])]).job_id
        # the submitting client is gone; the job runs on
        with SamsemClient(srv.address) as second:
            done = _final(second, job_id)
            assert done.state == pb.JOB_SUCCEEDED and done.files[0].state == pb.FILE_DONE
            slow = second.submit_job([str(tree["a"]), str(tree["b"]), str(tree["c"])], overwrite=True)
            while second.get_job(slow.job_id).tiles_done == 0:
                time.sleep(0.01)
            cancelled = second.cancel_job(slow.job_id)
            assert cancelled.job_id == slow.job_id
            final = _final(second, slow.job_id)
            assert final.state == pb.JOB_CANCELLED and "cancelled by CancelJob" in final.error
            assert pb.FILE_CANCELLED in [f.state for f in final.files]
            calls = seg.calls
            time.sleep(0.2)
            assert seg.calls <= calls + 1
            assert final.tiles_done < final.tiles_total
