"""Regression tests of the attacks in issue 17 (loopback only): confinement checked at every open,
idle and oversized uploads, costs and reply sizes checked before work, status codes and observability."""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
import zlib
from pathlib import Path

import grpc
import numpy as np
import pytest
from test_server import lines_image, rpc_error, serving, slow_pipeline

from samsem.io import write_image
from samsem.runtime.load import load_pipeline
from samsem.server import samsem_pb2 as pb
from samsem.server.app import ServerConfig, ServerThread
from samsem.server.client import SamsemClient, retry_after_s
from samsem.server.spool import Spool

SERVICE = "/samsem.v1.Segmentation/"


def _final(client: SamsemClient, job_id: str) -> pb.Job:
    *_, last = client.watch_job(job_id, timeout=60)
    return last


def _wait_for(cond, timeout: float = 10.0) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def _count(srv: ServerThread, method: str, code: str) -> float:
    return srv.server.metrics.requests.labels(method, code)._value.get()


class Upload:
    """A Segment request stream: a header, then ``chunks`` (counting how many were taken), then it
    waits (an idle upload) until :meth:`release`."""

    def __init__(self, header: pb.ImageHeader, chunks=(), wait: bool = True) -> None:
        self.header = header
        self.chunks = chunks
        self.wait = wait
        self.sent = 0
        self._release = threading.Event()

    def __iter__(self):
        yield pb.SegmentRequest(header=self.header)
        for chunk in self.chunks:
            self.sent += 1
            yield pb.SegmentRequest(chunk=chunk)
        if self.wait:
            self._release.wait(30)

    def release(self) -> None:
        self._release.set()


def _start(client: SamsemClient, upload: Upload, timeout: float = 30) -> tuple[threading.Thread, dict]:
    """Run the Segment call of ``upload`` in a thread; the result dict gets "error" or "replies"."""
    out: dict = {}

    def run() -> None:
        try:
            out["replies"] = list(client.stub.Segment(iter(upload), timeout=timeout))
        except grpc.RpcError as exc:
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    return t, out


def _raw_header(h: int, w: int, name: str = "x") -> pb.ImageHeader:
    return pb.ImageHeader(name=name, raw=pb.RawLayout(dtype="uint8", height=h, width=w))


# ------------------------------------------------------------------------- 1, 2: confinement


def test_job_confinement_is_checked_when_the_file_is_opened(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "victim").mkdir(parents=True)
    outside.mkdir()
    write_image(root / "victim" / "a.png", lines_image(64, 64, seed=1))
    write_image(outside / "a.png", lines_image(64, 64, seed=2))
    write_image(root / "slow.png", lines_image(400, 400))
    pipe, _ = slow_pipeline(delay=0.05)
    with serving(ServerConfig(port=0, job_roots=(root,)), pipe) as (srv, client):
        slow = client.submit_job([str(root / "slow.png")])
        victim = client.submit_job([str(root / "victim" / "a.png")])  # confined now, queued
        (root / "victim").rename(root / "victim.orig")
        os.symlink(outside, root / "victim")
        client.cancel_job(slow.job_id)
        done = _final(client, victim.job_id)
        refused = srv.server.metrics.registry.get_sample_value("samsem_job_files_refused_total")
    assert sorted(p.name for p in outside.iterdir()) == ["a.png"]  # nothing read from or written there
    (status,) = done.files
    assert done.state == pb.JOB_FAILED and status.state == pb.FILE_FAILED
    assert status.code == "PERMISSION_DENIED" and "refused" in status.error
    assert refused == 1


def test_output_root_links_are_not_followed(tmp_path: Path) -> None:
    root, out, outside = tmp_path / "root", tmp_path / "out", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    out.mkdir()
    outside.mkdir()
    write_image(root / "sub" / "c.png", lines_image(64, 64))
    write_image(root / "d.png", lines_image(64, 64))
    os.symlink(outside, out / "sub")
    cfg = ServerConfig(port=0, job_roots=(root,), output_root=out)
    with serving(cfg, load_pipeline("classical")) as (_, client):
        done = _final(client, client.submit_job([str(root / "sub" / "c.png"), str(root / "d.png")]).job_id)
    assert list(outside.iterdir()) == []
    states = {Path(f.input).name: (f.state, f.code) for f in done.files}
    assert states == {"c.png": (pb.FILE_FAILED, "PERMISSION_DENIED"), "d.png": (pb.FILE_DONE, "")}
    assert (out / "d.mask.png").is_file()


# ------------------------------------------------------------------------- 3: idle uploads, per peer


def test_idle_uploads_are_ended_and_free_their_slots() -> None:
    cfg = ServerConfig(port=0, max_active=2, max_queued=2, max_calls_per_peer=4, upload_idle_s=0.5)
    with serving(cfg, load_pipeline("classical")) as (srv, client):
        uploads = [Upload(_raw_header(64, 64)) for _ in range(4)]
        started = [_start(client, u) for u in uploads]
        _wait_for(lambda: srv.server.admission.admitted == 4)
        t0 = time.monotonic()
        for t, _ in started:
            t.join(10)
        assert time.monotonic() - t0 < 5
        for _, out in started:
            assert out["error"].code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "upload stalled" in out["error"].details()
        _wait_for(lambda: srv.server.admission.admitted == 0)
        assert client.segment(lines_image(64, 64)).mask.shape == (64, 64)
        for u in uploads:
            u.release()


def test_one_client_address_cannot_take_every_slot() -> None:
    cfg = ServerConfig(port=0, max_active=2, max_queued=2, max_calls_per_peer=2, upload_idle_s=10)
    with serving(cfg, load_pipeline("classical")) as (srv, client):
        uploads = [Upload(_raw_header(64, 64)) for _ in range(2)]
        started = [_start(client, u) for u in uploads]
        _wait_for(lambda: srv.server.admission.admitted == 2)
        err = rpc_error(lambda: client.segment(lines_image(64, 64)))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "per client address" in err.details() and retry_after_s(err) is not None
        for u in uploads:
            u.release()
        for t, out in started:
            t.join(10)
            assert out["error"].code() == grpc.StatusCode.INVALID_ARGUMENT  # truncated upload
        _wait_for(lambda: srv.server.admission.admitted == 0)


# ------------------------------------------------------------------------- 4: encoded uploads


def _encoded(size: int, fmt: str = "png") -> pb.ImageHeader:
    return pb.ImageHeader(name="e", encoded=pb.EncodedLayout(format=fmt, size=size))


def _spooled_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_encoded_uploads_are_checked_on_their_first_bytes(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    cfg = ServerConfig(port=0, tmp_dir=spool, max_encoded_bytes=4 << 30)
    zeros = bytes(1 << 20)
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    huge_png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
    huge_png += struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + bytes(1000)
    with serving(cfg, load_pipeline("classical")) as (srv, client):
        for header, first, message in (
            (_encoded(2 << 30), zeros, "not a png file"),
            (_encoded(2 << 30, "tiff"), zeros, "not a tiff file"),
            (_encoded(1 << 20), huge_png, "more than the server's limit"),
        ):
            upload = Upload(header, [first])  # then it waits: the answer must come without more data
            t0 = time.monotonic()
            t, out = _start(client, upload)
            t.join(20)
            assert time.monotonic() - t0 < 5
            assert out["error"].code() == grpc.StatusCode.INVALID_ARGUMENT, out
            assert message in out["error"].details()
            upload.release()
        assert _spooled_bytes(spool) < 1 << 20
        assert srv.server.spool.used == 0


def _png_head(h: int = 64, w: int = 64) -> bytes:
    """A PNG's signature and IHDR chunk (the first 33 bytes) of an 8-bit gray h x w image."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", 13)
        + b"IHDR"
        + ihdr
        + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    )


def test_spooled_bytes_count_against_a_disk_budget(tmp_path: Path) -> None:
    """An upload that could never fit is refused at its header; otherwise its bytes are counted as they
    arrive, and an upload whose bytes do not fit now is RESOURCE_EXHAUSTED."""
    cfg = ServerConfig(port=0, tmp_dir=tmp_path, spool_budget=1 << 20, upload_idle_s=10)
    first = _png_head() + bytes((600 << 10) - 33)
    with serving(cfg, load_pipeline("classical")) as (srv, client):
        err = rpc_error(lambda: list(client.stub.Segment(iter(Upload(_encoded(2 << 20), wait=False)))))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "spool budget" in err.details()
        holder = Upload(_encoded(800 << 10), [first])
        t, _ = _start(client, holder)
        _wait_for(lambda: srv.server.spool.used == 600 << 10)  # what it sent, not what it declared
        second = Upload(_encoded(800 << 10), [first], wait=False)
        err = rpc_error(lambda: list(client.stub.Segment(iter(second))))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "spool" in err.details()
        holder.release()
        t.join(10)
        _wait_for(lambda: srv.server.spool.used == 0)


class Trickle(Upload):
    """An upload that sends its header and then one chunk each time :meth:`step` is called."""

    def __init__(self, header: pb.ImageHeader, chunk: bytes) -> None:
        super().__init__(header)
        self.chunk = chunk
        self._steps: list[threading.Event] = []
        self._next = threading.Event()

    def __iter__(self):
        yield pb.SegmentRequest(header=self.header)
        while self._next.wait(30) and not self._release.is_set():
            self._next.clear()
            self.sent += 1
            yield pb.SegmentRequest(chunk=self.chunk)

    def step(self) -> None:
        self._next.set()

    def release(self) -> None:
        self._release.set()
        self._next.set()


def test_trickling_uploads_hold_only_what_they_sent() -> None:
    """Three raw uploads each declaring a third of the memory budget that then trickle 4 KiB at a
    time (issue 26.3): another client's request is admitted and served while they trickle, and each
    trickler holds exactly the bytes it has sent."""
    side = 1024  # 1 MiB of pixels + 1 MiB of mask each: 6 MiB declared of a 6.5 MiB budget
    cfg = ServerConfig(
        port=0, memory_budget=13 << 19, max_peer_upload=8 << 20, upload_idle_s=30, upload_min_rate=1.0
    )
    with serving(cfg, load_pipeline("classical")) as (srv, client):
        tricklers = [Trickle(_raw_header(side, side), bytes(4096)) for _ in range(3)]
        started = [_start(client, u) for u in tricklers]
        _wait_for(lambda: srv.server.admission.admitted == 3)
        for u in tricklers:
            u.step()
        _wait_for(lambda: srv.server.admission.reserved == 3 * 4096)
        out = client.segment(lines_image(600, 600))  # 720 KB of buffers: did not fit before
        assert out.mask.shape == (600, 600)
        _wait_for(lambda: srv.server.admission.reserved == 3 * 4096)  # its slot is freed after the reply
        assert all(u.sent == 1 for u in tricklers)
        for u in tricklers:
            u.release()
        for t, out in started:
            t.join(10)
            assert out["error"].code() == grpc.StatusCode.INVALID_ARGUMENT  # truncated upload
        _wait_for(lambda: srv.server.admission.admitted == 0 and srv.server.admission.reserved == 0)


def test_one_client_address_cannot_declare_more_than_its_share() -> None:
    """Beyond its first call, one client address may declare at most max_peer_upload bytes in uploads
    in progress: RESOURCE_EXHAUSTED with a retry hint; a single large upload is never refused by it."""
    cfg = ServerConfig(port=0, memory_budget=64 << 20, max_peer_upload=3 << 20, upload_idle_s=30)
    with serving(cfg, load_pipeline("classical")) as (srv, client):
        big = Upload(_raw_header(2048, 2048))  # 4 MiB alone: more than the share, admitted
        t, _ = _start(client, big)
        _wait_for(lambda: srv.server.admission.admitted == 1)
        err = rpc_error(lambda: client.segment(lines_image(64, 64)))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "per client address" in err.details()
        assert retry_after_s(err) is not None
        big.release()
        t.join(10)
        _wait_for(lambda: srv.server.admission.admitted == 0)
        assert client.segment(lines_image(64, 64)).mask.shape == (64, 64)


def test_spools_of_crashed_servers_are_removed_at_start(tmp_path: Path) -> None:
    dead = tmp_path / "samsem-spool-dead"
    dead.mkdir()
    (dead / "lock").touch()  # nobody holds its lock: its server is gone
    (dead / "upload-x.png").write_bytes(bytes(1000))
    live = Spool(tmp_path, 1 << 20, lambda: 1.0)  # another running server's spool
    try:
        with ServerThread(ServerConfig(port=0, tmp_dir=tmp_path), load_pipeline("classical")) as srv:
            assert not dead.exists() and live.dir.is_dir() and srv.server.spool.dir.is_dir()
        assert not srv.server.spool.dir.exists()
    finally:
        live.close()


# ------------------------------------------------------------------------- 5: cost and reply size


def test_elongated_images_are_refused_before_any_work() -> None:
    pipe, seg = slow_pipeline(delay=0.0)
    cfg = ServerConfig(port=0, max_image_pixels=256 * 256)
    with serving(cfg, pipe) as (_, client):
        limit = client.model_info().max_inputs
        assert limit == pipe.count_inputs(256, 256)
        upload = Upload(_raw_header(1, 65536))  # the header alone: refused without waiting for data
        t, out = _start(client, upload)
        t.join(5)
        assert out["error"].code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"more than the server's limit of {limit}" in out["error"].details()
        upload.release()
        err = rpc_error(lambda: client.segment_tile(np.zeros((1, 60000), np.uint8)))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "model inputs" in err.details()
        assert seg.calls == 0
        assert client.segment(lines_image(200, 300)).mask.shape == (200, 300)


def test_replies_that_cannot_fit_are_refused_before_computing() -> None:
    pipe, seg = slow_pipeline(delay=0.0)
    with serving(ServerConfig(port=0), pipe) as (_, client):
        for call in (client.segment, client.segment_tile):
            err = rpc_error(lambda call=call: call(lines_image(64, 64), name="n" * (4 << 20)))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "longer than" in err.details()
        assert seg.calls == 0


def test_large_reports_are_streamed_in_pieces() -> None:
    pipe = load_pipeline("classical")
    img = lines_image(800, 800)
    with serving(ServerConfig(port=0, chunk_bytes=1024), pipe, chunk_bytes=1024) as (_, client):
        replies = list(client.stub.Segment(iter(client_requests(img))))
        out = client.segment(img, name="big")
    parts = [r.report_part for r in replies if r.WhichOneof("part") == "report_part"]
    assert len(parts) >= 2 and all(len(p) <= 1024 for p in parts)
    assert replies[-1].report.report_streamed and replies[-1].report.report_json == ""
    local = pipe.segment(img, name="big")
    np.testing.assert_array_equal(out.mask, local.mask)
    assert out.report["patches"] == local.report.to_json()["patches"]


def client_requests(img: np.ndarray):
    yield pb.SegmentRequest(header=_raw_header(*img.shape, name="big"))
    data = img.tobytes()
    for start in range(0, len(data), 1024):
        yield pb.SegmentRequest(chunk=data[start : start + 1024])


# ------------------------------------------------------------------------- 10: status codes


def test_undecodable_messages_are_invalid_argument() -> None:
    garbage = b"\x0a\xff\xff\xff\xff\x0f"  # a length-delimited field running past the end
    with serving(ServerConfig(port=0, job_roots=(Path("/"),)), load_pipeline("classical")) as (srv, client):
        for method in ("SegmentTile", "SubmitJob", "GetJob", "CancelJob", "GetModelInfo", "ListJobs"):
            rpc = client.channel.unary_unary(SERVICE + method)
            err = rpc_error(lambda rpc=rpc: rpc(garbage, timeout=10))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, method
            assert "malformed request" in err.details()
        watch = client.channel.unary_stream(SERVICE + "WatchJob")
        assert rpc_error(lambda: list(watch(garbage, timeout=10))).code() == grpc.StatusCode.INVALID_ARGUMENT
        segment = client.channel.stream_stream(SERVICE + "Segment")
        err = rpc_error(lambda: list(segment(iter([garbage]), timeout=10)))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert _count(srv, "GetJob", "INVALID_ARGUMENT") == 1
        assert _count(srv, "Segment", "INVALID_ARGUMENT") == 1


def test_bad_job_paths_and_ids_get_specific_codes_and_short_messages(tmp_path: Path) -> None:
    with serving(ServerConfig(port=0, job_roots=(tmp_path,)), load_pipeline("classical")) as (_, client):
        for path in (f"{tmp_path}/a\x00b.png", f"{tmp_path}/" + "x" * 5000, "/" + "y" * 300 + "/z.png"):
            err = rpc_error(lambda path=path: client.submit_job([path]))
            assert err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED), path
            assert len(err.details()) < 1000
        err = rpc_error(lambda: client.get_job("j" * 100_000))
        assert err.code() == grpc.StatusCode.NOT_FOUND and len(err.details()) < 1000
    with serving(ServerConfig(port=0), load_pipeline("classical")) as (_, client):
        for call in (
            client.get_job,
            client.cancel_job,
            lambda j: list(client.watch_job(j)),
            lambda j: client.list_jobs(),
        ):
            err = rpc_error(lambda call=call: call("x"))
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "--job-root" in err.details()


# ------------------------------------------------------------------------- 12: observability


def test_unauthenticated_calls_are_counted_and_logged(caplog) -> None:
    cfg = ServerConfig(port=0, tokens=("secret",))
    with (
        caplog.at_level(logging.WARNING, logger="samsem.server"),
        serving(cfg, load_pipeline("classical")) as (srv, client),
    ):
        err = rpc_error(client.model_info)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        assert _count(srv, "GetModelInfo", "UNAUTHENTICATED") == 1
    records = [r for r in caplog.records if "UNAUTHENTICATED" in r.getMessage()]
    assert records and records[0].fields["peer"].startswith("ipv")  # type: ignore[attr-defined]


def test_deadline_expiry_is_recorded_as_deadline_exceeded() -> None:
    with serving(ServerConfig(port=0, upload_idle_s=30), load_pipeline("classical")) as (srv, client):
        upload = Upload(_raw_header(64, 64))
        t, out = _start(client, upload, timeout=0.3)
        t.join(10)
        assert out["error"].code() == grpc.StatusCode.DEADLINE_EXCEEDED
        _wait_for(lambda: _count(srv, "Segment", "DEADLINE_EXCEEDED") == 1)
        assert _count(srv, "Segment", "CANCELLED") == 0
        upload.release()


@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_memory_reserved_for_decoding_covers_what_decoding_takes(tmp_path: Path, fmt: str) -> None:
    """16-bit RGBA is the costliest layout: the reservation must cover the decoder's real peak."""
    import tracemalloc

    import cv2
    import tifffile

    from samsem.io import read_image
    from samsem.server.codec import decoded_info

    rng = np.random.default_rng(0)
    rgba = (rng.random((300, 400, 4)) * 65535).astype(np.uint16)
    rgba[:, :200] = 1000  # partly compressible, like real images
    path = tmp_path / f"x.{'png' if fmt == 'png' else 'tif'}"
    if fmt == "png":
        cv2.imwrite(str(path), rgba[:, :, [2, 1, 0, 3]])
    else:
        tifffile.imwrite(path, rgba, compression="zlib")
    h, w, reserved = decoded_info(path, fmt)
    tracemalloc.start()
    read_image(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert (h, w) == (300, 400)
    assert peak <= reserved <= 1.5 * peak


def test_job_file_errors_name_the_input_not_the_private_pin(tmp_path: Path) -> None:
    """A job's unreadable file fails with a reason naming the caller's path, never the server's spool
    or pin folder (issue 26.8)."""
    root = tmp_path / "root"
    root.mkdir()
    write_image(root / "good.png", lines_image(64, 64))
    (root / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    cfg = ServerConfig(port=0, job_roots=(root,), tmp_dir=tmp_path / "spool")
    with serving(cfg, load_pipeline("classical")) as (srv, client):
        job = _final(client, client.submit_job([str(root)]).job_id)
        spool = str(srv.server.spool.dir)
    errors = {Path(f.input).name: f.error for f in job.files}
    assert errors["good.png"] == "" and "bad.png" in errors["bad.png"], errors
    assert str(root / "bad.png") in errors["bad.png"]
    assert spool not in errors["bad.png"] and "pins-" not in errors["bad.png"]


class Drip(Upload):
    """An upload that keeps sending 16-byte chunks (one per pause of its event) until released."""

    def __iter__(self):
        yield pb.SegmentRequest(header=self.header)
        while not self._release.wait(0.01):
            self.sent += 1
            yield pb.SegmentRequest(chunk=bytes(16))


def test_an_upload_must_keep_up_with_the_minimum_rate_from_its_first_bytes() -> None:
    """Messages keep coming (never idle), but at ~1.6 KB/s against a 1 MiB/s minimum: the call ends
    once the bytes fall behind, a second after the first idle window, not after the whole declared
    upload's allowance (64 MiB / 1 MiB/s = 64 s before; issue 26.3)."""
    cfg = ServerConfig(port=0, upload_idle_s=1.0, memory_budget=256 << 20)
    with serving(cfg, load_pipeline("classical")) as (srv, client):
        drip = Drip(_raw_header(8192, 8192))
        t, out = _start(client, drip, timeout=60)
        t.join(20)
        drip.release()
        assert not t.is_alive() and out["error"].code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "minimum upload rate" in out["error"].details() and drip.sent > 0
        _wait_for(lambda: srv.server.admission.admitted == 0 and srv.server.admission.reserved == 0)
