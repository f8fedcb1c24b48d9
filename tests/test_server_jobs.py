"""Server-side jobs: confinement to roots, outputs beside inputs or under an output root, skipping,
per-file failures, cancellation and jobs that outlive their client."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import sys
import threading
import time
import types
from pathlib import Path

import grpc
import numpy as np
import pytest
from test_server import lines_image, rpc_error, serving, slow_pipeline
from test_server_large import start_server

from samsem.errors import ConfigError
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


def _final(client: SamsemClient, job_id: str, timeout: float = 60) -> pb.Job:
    *_, last = client.watch_job(job_id, timeout=timeout)
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


# ------------------------------------------------------------------------- persistence (issue 17.8)

JOB_SERVER = """
import asyncio, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_server import slow_pipeline
from samsem.server.app import SamsemServer, ServerConfig
from samsem.server.observability import configure_logging
configure_logging()
pipe, _ = slow_pipeline(delay=0.05)
config = ServerConfig(port=0, job_roots=(Path({root!r}),), job_db=Path({db!r}))
asyncio.run(SamsemServer(config, pipe).run_until_signal(Path(sys.argv[1])))
"""


def _job_server(tmp_path: Path, run: str, root: Path, db: Path):
    folder = tmp_path / run
    folder.mkdir()
    script = JOB_SERVER.format(tests=str(Path(__file__).parent), root=str(root), db=str(db))
    return start_server(folder, command=[sys.executable, "-c", script])


def test_jobs_survive_kill_9_and_resume_without_redoing_finished_files(tmp_path: Path) -> None:
    root, db = tmp_path / "root", tmp_path / "state" / "jobs.sqlite"
    root.mkdir()
    for i in range(6):
        write_image(root / f"img{i}.png", lines_image(256, 256, seed=i))
    proc, address = _job_server(tmp_path, "run1", root, db)
    try:
        with SamsemClient(address) as client:
            job_id = client.submit_job([str(root)]).job_id
            snap = client.get_job(job_id)
            while not any(f.state == pb.FILE_DONE for f in snap.files):
                time.sleep(0.02)
                snap = client.get_job(job_id)
            proc.kill()  # SIGKILL: no clean-up of any kind
            proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert snap.state == pb.JOB_RUNNING
    finished = {f.input: os.stat(f.report_path).st_mtime_ns for f in snap.files if f.state == pb.FILE_DONE}
    proc, address = _job_server(tmp_path, "run2", root, db)
    try:
        with SamsemClient(address) as client:
            final = _final(client, job_id)
            assert [j.job_id for j in client.list_jobs()] == [job_id]
    finally:
        proc.terminate()
        proc.wait(30)
    assert final.state == pb.JOB_SUCCEEDED and len(final.files) == 6  # outputs were never inputs
    assert all(f.state == pb.FILE_DONE for f in final.files)
    for path, mtime in finished.items():
        assert os.stat(Path(path).with_name(Path(path).stem + ".report.json")).st_mtime_ns == mtime
    assert not [p for p in root.iterdir() if ".tmp" in p.name]


def test_restarted_server_lists_past_jobs_and_owns_its_database(tree, tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite"
    cfg = ServerConfig(port=0, job_roots=(tree["root"],), job_db=db)
    pipe = load_pipeline("classical")
    with serving(cfg, pipe) as (_, client):
        done = _final(client, client.submit_job([str(tree["a"])]).job_id)
        with pytest.raises(ConfigError, match="in use by another server"):
            ServerThread(cfg, pipe)
    with serving(cfg, pipe) as (_, client):
        assert client.get_job(done.job_id) == done
        (listed,) = client.list_jobs()
        assert listed.job_id == done.job_id and listed.file_count == 1 and not listed.files
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_folder_jobs_rerun_in_place_take_only_images(tree) -> None:
    tree["link"].unlink()  # (a link out of the roots fails alone: test_a_link_out_of_the_roots_...)
    (tree["root"] / ".a.mask.0123456789ab.tmp.png").write_bytes(b"left by a killed run")
    with serving(ServerConfig(port=0, job_roots=(tree["root"],)), load_pipeline("classical")) as (_, client):
        first = _final(client, client.submit_job([str(tree["root"])]).job_id)
        second = _final(client, client.submit_job([str(tree["root"])], overwrite=True).job_id)
    names = sorted(Path(f.input).name for f in first.files)
    assert names == ["a.png", "b.tif"]
    assert sorted(Path(f.input).name for f in second.files) == names
    assert not (tree["root"] / ".a.mask.0123456789ab.tmp.png").exists()  # our stale temp, removed
    assert not list(tree["root"].glob("*.mask.mask.*"))


def test_jobs_write_vector_files_beside_the_mask(tree) -> None:
    from samsem.vector import VectorOptions, read_layout_mask

    opts = VectorOptions(formats=("svg", "geojson"), tolerance_px=0)
    with serving(ServerConfig(port=0, job_roots=(tree["root"],)), load_pipeline("classical")) as (_, client):
        # generous: the first vectorization in a fresh checkout compiles samsem.vector's kernels
        done = _final(client, client.submit_job([str(tree["a"])], vector=opts).job_id, timeout=600)
        again = _final(client, client.submit_job([str(tree["a"])], vector=opts).job_id)
    (f,) = done.files
    assert f.state == pb.FILE_DONE and [Path(p).name for p in f.vector_paths] == [
        "a.mask.svg",
        "a.mask.geojson",
    ]
    mask = read_mask(f.mask_path)
    for path in f.vector_paths:
        np.testing.assert_array_equal(read_layout_mask(path), mask)
    assert again.files[0].state == pb.FILE_SKIPPED


def _stored_states(db: Path, job_id: str) -> tuple[int, list[int]]:
    with contextlib.closing(sqlite3.connect(db)) as con:
        (state,) = con.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
        files = [s for (s,) in con.execute("SELECT state FROM files WHERE job_id=? ORDER BY idx", (job_id,))]
    return state, files


def test_worker_outlives_refused_database_writes_and_stores_every_state(tree, tmp_path, monkeypatch) -> None:
    db = tmp_path / "jobs.sqlite"
    with serving(ServerConfig(port=0, job_roots=(tree["root"],), job_db=db), load_pipeline("classical")) as (
        srv,
        client,
    ):
        store = srv.server.store
        update, calls = store.update, []

        def flaky(*args, **kw) -> None:  # the start and the first file's writes fail (disk full), then work
            calls.append(args)
            if 1 <= len(calls) <= 4:
                raise sqlite3.OperationalError("database or disk is full")
            update(*args, **kw)

        monkeypatch.setattr(store, "update", flaky)
        first = _final(client, client.submit_job([str(tree["a"]), str(tree["b"])]).job_id, timeout=30)
        second = _final(client, client.submit_job([str(tree["c"])]).job_id, timeout=30)  # worker alive
        assert len(calls) > 4
    for job in (first, second):
        assert job.state == pb.JOB_SUCCEEDED and all(f.state == pb.FILE_DONE for f in job.files)
        assert _stored_states(db, job.job_id) == (pb.JOB_SUCCEEDED, [pb.FILE_DONE] * len(job.files))


def test_job_calls_answer_unavailable_while_the_database_is_read_only(tree, tmp_path) -> None:
    db = tmp_path / "jobs.sqlite"
    with serving(ServerConfig(port=0, job_roots=(tree["root"],), job_db=db), load_pipeline("classical")) as (
        srv,
        client,
    ):
        store = srv.server.store
        with store._lock:
            store._db.execute("PRAGMA query_only=ON")  # every write now fails as on a read-only database
        err = rpc_error(lambda: client.submit_job([str(tree["a"])]))
        assert err.code() == grpc.StatusCode.UNAVAILABLE and "job database" in err.details()
        assert client.list_jobs() == []  # nothing acknowledged, nothing listed
        with store._lock:
            store._db.execute("PRAGMA query_only=OFF")
        done = _final(client, client.submit_job([str(tree["a"])]).job_id, timeout=30)
    assert done.state == pb.JOB_SUCCEEDED
    assert _stored_states(db, done.job_id) == (pb.JOB_SUCCEEDED, [pb.FILE_DONE])


def test_store_takes_writes_again_after_a_failed_commit(tmp_path) -> None:
    from samsem.server.jobstore import FileRow, JobRow, JobStore

    store = JobStore(tmp_path / "jobs.sqlite")
    try:
        row = JobRow("j", 1, pb.JOB_QUEUED, {}, False, {}, 1.0, files=[FileRow(0, "/a.png", "/", "", 0)])
        store.insert(row)

        def deny_commit(action: int, arg1, *_) -> int:
            refused = action == sqlite3.SQLITE_TRANSACTION and arg1 == "COMMIT"
            return sqlite3.SQLITE_DENY if refused else sqlite3.SQLITE_OK

        store._db.set_authorizer(deny_commit)
        row.state = pb.JOB_RUNNING
        with pytest.raises(sqlite3.DatabaseError):
            store.update(row)
        store._db.set_authorizer(None)
        row.state = pb.JOB_SUCCEEDED
        store.update(row)  # the failed transaction was rolled back, not left open
        (loaded,) = store.load()
        assert loaded.state == pb.JOB_SUCCEEDED
    finally:
        store.close()


# one damaged row per job: (column of the row, what goes in it, what the job's error names)
DAMAGE = {
    "options": ("UPDATE jobs SET options='{not json' WHERE id=?", "jobs.options"),
    "vector paths": ("UPDATE files SET vector_paths='[1, 2' WHERE job_id=?", "files.vector_paths"),
    "text counter": ("UPDATE jobs SET tiles_done='many' WHERE id=?", "jobs.tiles_done"),
    "text order": ("UPDATE jobs SET seq='late' WHERE id=?", "jobs.seq"),  # MAX(seq) is this text
    "job state": ("UPDATE jobs SET state=42 WHERE id=?", "jobs.state = 42"),
    "file state": ("UPDATE files SET state=-3 WHERE job_id=?", "files.state = -3"),
}


def test_damaged_rows_fail_their_job_alone_and_the_server_starts(tree, tmp_path, caplog) -> None:
    import logging

    db = tmp_path / "jobs.sqlite"
    cfg = ServerConfig(port=0, job_roots=(tree["root"],), job_db=db)
    pipe = load_pipeline("classical")
    with serving(cfg, pipe) as (_, client):
        jobs = [_final(client, client.submit_job([str(tree["a"])]).job_id) for _ in range(len(DAMAGE) + 1)]
    intact, damaged = jobs[0], dict(zip(DAMAGE, jobs[1:], strict=True))
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        for kind, (sql, _) in DAMAGE.items():
            con.execute(sql, (damaged[kind].job_id,))
    with caplog.at_level(logging.ERROR, logger="samsem.server"), serving(cfg, pipe) as (_, client):
        assert client.get_job(intact.job_id) == intact
        listed = {j.job_id: j for j in client.list_jobs()}
        assert len(listed) == len(jobs)
        for kind, (_, named) in DAMAGE.items():
            job = client.get_job(damaged[kind].job_id)
            assert job.state == pb.JOB_FAILED and listed[job.job_id].state == pb.JOB_FAILED, kind
            assert job.error.startswith("damaged in the job database: ") and named in job.error, kind
        again = _final(client, client.submit_job([str(tree["a"])], overwrite=True).job_id)
        assert again.state == pb.JOB_SUCCEEDED  # new jobs run (and get a sequence number)
    logged = [r for r in caplog.records if r.getMessage().startswith("damaged job in the job database")]
    assert len(logged) == len(DAMAGE)
    with contextlib.closing(sqlite3.connect(db)) as con:  # kept, not deleted
        assert con.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == len(jobs) + 1


def test_an_unreadable_job_database_is_one_clear_error(tmp_path) -> None:
    from samsem.server.jobstore import FileRow, JobRow, JobStore

    db = tmp_path / "jobs.sqlite"
    store = JobStore(db)
    files = [FileRow(i, f"/data/{'x' * 80}{i}.png", "/data", "", pb.FILE_DONE) for i in range(200)]
    store.insert(JobRow("j", 1, pb.JOB_SUCCEEDED, {}, False, {}, 1.0, files=files))
    store.close()
    with contextlib.closing(sqlite3.connect(db)) as con:
        (page,) = con.execute("PRAGMA page_size").fetchone()
        (root,) = con.execute("SELECT rootpage FROM sqlite_master WHERE name='files'").fetchone()
    with open(db, "r+b") as fh:  # the files table's first page, garbled
        fh.seek((root - 1) * page)
        fh.write(b"\xff" * page)
    store = JobStore(db)
    try:
        with pytest.raises(ConfigError, match=r"job database .*jobs\.sqlite: cannot be read \(.*malformed"):
            store.load()
    finally:
        store.close()


# ------------------------------------------------------------------------- faults (issues 25.4, 26.4, 26.5)


def test_a_link_out_of_the_roots_fails_alone_and_the_folder_runs(tree) -> None:
    with serving(ServerConfig(port=0, job_roots=(tree["root"],)), load_pipeline("classical")) as (
        srv,
        client,
    ):
        done = _final(client, client.submit_job([str(tree["root"])]).job_id)
        refused = srv.server.metrics.registry.get_sample_value("samsem_job_files_refused_total")
    states = {Path(f.input).name: (f.state, f.code) for f in done.files}
    assert states == {
        "a.png": (pb.FILE_DONE, ""),
        "b.tif": (pb.FILE_DONE, ""),
        "link.png": (pb.FILE_FAILED, "PERMISSION_DENIED"),
    }
    (link,) = [f for f in done.files if f.input == str(tree["link"])]
    assert "outside the server's job roots; refused" in link.error and not link.mask_path
    assert done.state == pb.JOB_FAILED and refused == 1
    assert sorted(p.name for p in tree["outside"].iterdir()) == ["d.png"]  # nothing written there


def _behind_a_slow_job(client: SamsemClient, root: Path, inputs: list[str], meanwhile) -> pb.Job:
    """Submit ``inputs`` while a slow job holds the worker, call ``meanwhile()`` (the job is queued,
    its files not yet opened), then cancel the slow job and return the job's final state."""
    write_image(root / "slow.png", lines_image(400, 400))
    slow = client.submit_job([str(root / "slow.png")])
    job = client.submit_job(inputs)
    meanwhile()
    client.cancel_job(slow.job_id)
    return _final(client, job.job_id)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifos_in_a_job_fail_alone_without_blocking_the_worker(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "batch").mkdir(parents=True)
    for name in ("x.png", "y.png", "z.png"):
        write_image(root / "batch" / name, lines_image(64, 64))
    os.mkfifo(root / "batch" / "w.png")  # a FIFO when the job is listed

    def swap() -> None:  # y.png replaced by a FIFO after the job was listed
        (root / "batch" / "y.png").unlink()
        os.mkfifo(root / "batch" / "y.png")

    pipe, _ = slow_pipeline(delay=0.02)
    with serving(ServerConfig(port=0, job_roots=(root,)), pipe) as (_, client):
        done = _final(client, _behind_a_slow_job(client, root, [str(root / "batch")], swap).job_id)
        later = _final(client, client.submit_job([str(root / "batch" / "x.png")], overwrite=True).job_id)
    states = {Path(f.input).name: (f.state, f.code) for f in done.files}
    assert states == {
        "w.png": (pb.FILE_FAILED, "INVALID_ARGUMENT"),
        "x.png": (pb.FILE_DONE, ""),
        "y.png": (pb.FILE_FAILED, "INVALID_ARGUMENT"),
        "z.png": (pb.FILE_DONE, ""),
    }
    for f in done.files:
        if f.state == pb.FILE_FAILED:
            assert f.error == f"{f.input}: is a FIFO, not a regular file (expected an image file)"
    assert later.state == pb.JOB_SUCCEEDED  # the worker goes on


def test_cancel_and_shutdown_are_not_held_by_a_blocked_read(tree, monkeypatch) -> None:
    from samsem import io
    from samsem.server import jobs

    reading, release = threading.Event(), threading.Event()
    read_image = io.read_image

    def stuck(path):  # a read that does not return (a hung file system) until released
        reading.set()
        release.wait(60)
        return read_image(path)

    monkeypatch.setattr(io, "read_image", stuck)
    monkeypatch.setattr(jobs, "_STOP_S", 0.5)
    try:
        with serving(ServerConfig(port=0, job_roots=(tree["root"],)), load_pipeline("classical")) as (
            srv,
            client,
        ):
            job = client.submit_job([str(tree["a"])])
            assert reading.wait(30)
            assert client.cancel_job(job.job_id).state == pb.JOB_RUNNING  # answered during the read
        worker = srv.server.jobs._worker
        assert not release.is_set() and worker.is_alive()  # shut down with the read still blocked
    finally:
        release.set()
    worker.join(60)
    assert not worker.is_alive()


def test_a_full_output_disk_stops_the_job_and_leaves_untried_files_pending(tmp_path, monkeypatch) -> None:
    root, out = tmp_path / "root", tmp_path / "out"
    root.mkdir()
    for i in range(5):
        write_image(root / f"x{i}.png", lines_image(64, 64, seed=i))
    fsync = os.fsync

    def full_from_x1(fd: int) -> None:  # the disk fills while x1's outputs are written
        if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(".x1."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fsync(fd)

    cfg = ServerConfig(port=0, job_roots=(root,), output_root=out)
    with serving(cfg, load_pipeline("classical")) as (_, client):
        monkeypatch.setattr(os, "fsync", full_from_x1)
        done = _final(client, client.submit_job([str(root)]).job_id)
        written = sorted(p.name for p in out.iterdir())
        monkeypatch.setattr(os, "fsync", fsync)  # space freed: the same job submitted again
        again = _final(client, client.submit_job([str(root)]).job_id)
    states = [(f.state, f.code) for f in done.files]
    assert (
        states == [(pb.FILE_DONE, ""), (pb.FILE_FAILED, "RESOURCE_EXHAUSTED")] + [(pb.FILE_PENDING, "")] * 3
    )
    assert done.files[1].error == f"{root / 'x1.png'}: No space left on device"
    assert done.state == pb.JOB_FAILED and "out of space" in done.error and "stay pending" in done.error
    assert written == ["x0.mask.png", "x0.report.json"]  # nothing partial
    assert [f.state for f in again.files] == [pb.FILE_SKIPPED] + [pb.FILE_DONE] * 4


def test_a_full_job_database_answers_resource_exhausted(tree, tmp_path, monkeypatch) -> None:
    db = tmp_path / "jobs.sqlite"
    with serving(ServerConfig(port=0, job_roots=(tree["root"],), job_db=db), load_pipeline("classical")) as (
        srv,
        client,
    ):
        store = srv.server.store
        insert, update = store.insert, store.update
        full, refused = threading.Event(), threading.Event()

        def when_full(write):
            def call(*args, **kw) -> None:
                if full.is_set():
                    refused.set()
                    raise sqlite3.OperationalError("database or disk is full")
                write(*args, **kw)

            return call

        monkeypatch.setattr(store, "insert", when_full(insert))
        monkeypatch.setattr(store, "update", when_full(update))
        full.set()
        err = rpc_error(lambda: client.submit_job([str(tree["a"])]))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "job database's disk is full (database or disk is full)" in err.details()
        assert client.list_jobs() == []
        full.clear()
        running = client.submit_job([str(tree["a"]), str(tree["b"])], overwrite=True)
        refused.clear()
        full.set()  # fills while the job runs: its next state is refused, new jobs too
        assert refused.wait(30)
        err = rpc_error(lambda: client.submit_job([str(tree["c"])]))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "disk is full" in err.details()
        full.clear()
        done = _final(client, running.job_id, timeout=30)
    assert done.state == pb.JOB_SUCCEEDED
    assert _stored_states(db, done.job_id) == (pb.JOB_SUCCEEDED, [pb.FILE_DONE] * 2)


def test_a_jobs_cost_per_file_does_not_grow_with_its_files(tmp_path, monkeypatch) -> None:
    """Issue 26.7: path lookups, file statuses built and folder entries scanned per file are the same
    for 8 and 32 files, overwriting outputs, with a client watching (each output was checked against
    every input of the job, every change rebuilt the status of every file, and every file listed its
    output folder for stale temporary files: all quadratic in the files)."""
    from samsem import io
    from samsem.server import jobs

    root = tmp_path / "root"
    for n in (8, 32):
        for i in range(n):
            write_image(root / f"r{n}" / f"t{i:03d}.png", lines_image(16, 16, seed=i))
    calls = {"realpath": 0, "status": 0, "scanned": 0}

    def counted(name, fn):
        def call(*args, **kw):
            calls[name] += 1
            return fn(*args, **kw)

        return call

    per_file = {}
    with serving(ServerConfig(port=0, job_roots=(root,)), load_pipeline("classical")) as (_, client):
        for n in (8, 32):
            _final(client, client.submit_job([str(root / f"r{n}")]).job_id)  # outputs exist below
            with monkeypatch.context() as patch:
                patch.setattr(os.path, "realpath", counted("realpath", os.path.realpath))
                counting_pb = types.SimpleNamespace(
                    **{**vars(pb), "FileStatus": counted("status", pb.FileStatus)}
                )
                patch.setattr(jobs, "pb", counting_pb)
                patch.setattr(io, "temp_target", counted("scanned", io.temp_target))
                calls.update(realpath=0, status=0, scanned=0)
                rerun = client.submit_job([str(root / f"r{n}")], overwrite=True)  # each output exists
                snaps = list(client.watch_job(rerun.job_id, timeout=60))
            assert snaps[-1].state == pb.JOB_SUCCEEDED
            per_file[n] = {k: v / n for k, v in calls.items()}
    for k in calls:
        assert per_file[32][k] <= per_file[8][k] * 1.1, per_file


def test_watch_paces_snapshots_and_sends_the_final_state_at_once(tree, monkeypatch) -> None:
    """Changes within WATCH_EVERY_S of the last snapshot come together (a snapshot holds every file);
    the final state is not held back by the pace."""
    from samsem.server import jobs

    monkeypatch.setattr(jobs, "WATCH_EVERY_S", 3600.0)
    pipe, _ = slow_pipeline(delay=0.01)
    with serving(ServerConfig(port=0, job_roots=(tree["root"],)), pipe) as (_, client):
        job = client.submit_job([str(tree["a"]), str(tree["b"]), str(tree["c"])])
        snaps = list(client.watch_job(job.job_id, timeout=120))
    assert snaps[-1].state == pb.JOB_SUCCEEDED and len(snaps) <= 2  # the first and the final state
    assert [f.state for f in snaps[-1].files] == [pb.FILE_DONE] * 3
