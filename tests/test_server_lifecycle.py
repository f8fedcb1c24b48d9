"""Deadlines, cancellation, a full queue, graceful shutdown and health transitions (slow test segmenter)."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_server import lines_image, rpc_error, slow_pipeline

from samsem.server import samsem_pb2 as pb
from samsem.server.app import ServerConfig, ServerThread
from samsem.server.client import SamsemClient, retry_after_s

IMG = lines_image(400, 400, seed=5)  # 64 tiles of 64 px


def _wait_for(cond, timeout: float = 10.0) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def _in_thread(fn) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except Exception as exc:
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    return t, out


def _stops_working(seg, settle: float = 0.4) -> bool:
    """True when the segmenter gets at most one more call (the one in flight) after ``settle`` s."""
    before = seg.calls
    time.sleep(settle)
    return seg.calls <= before + 1


def test_deadline_stops_the_work_and_frees_the_slot() -> None:
    pipe, seg = slow_pipeline(delay=0.05)
    cfg = ServerConfig(port=0, request_batch=1, max_batch=1)
    with ServerThread(cfg, pipe) as srv, SamsemClient(srv.address) as client:
        t0 = time.monotonic()
        err = rpc_error(lambda: client.segment(IMG, timeout=0.4))
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - t0 < 2
        assert seg.calls < 64 and _stops_working(seg)  # stopped at a stage boundary, maybe before any batch
        _wait_for(lambda: srv.server.admission.admitted == 0)
        assert client.segment(lines_image(64, 64)).mask.shape == (64, 64)


def test_client_cancellation_stops_the_work() -> None:
    """Each model call waits for a permit the test hands out, so what the server does after the cancel
    does not depend on how fast it runs: the tile in flight ends and no later tile starts."""
    permits = threading.Semaphore(0)
    pipe, seg = slow_pipeline(delay=0, gate=lambda n: permits.acquire(timeout=120))
    cfg = ServerConfig(port=0, request_batch=1, max_batch=1)
    with ServerThread(cfg, pipe) as srv, SamsemClient(srv.address) as client:
        header = pb.ImageHeader(name="c", raw=pb.RawLayout(dtype="uint8", height=400, width=400))
        call = client.stub.Segment(
            iter([pb.SegmentRequest(header=header), pb.SegmentRequest(chunk=IMG.tobytes())])
        )
        assert next(call).progress.tiles_done == 0
        permits.release()  # the first tile
        assert next(call).progress.tiles_done == 1
        _wait_for(lambda: seg.calls == 2, timeout=120)  # the second tile waits at the gate
        call.cancel()
        reg = srv.server.metrics.registry
        _wait_for(
            lambda: reg.get_sample_value("samsem_requests_total", {"method": "Segment", "code": "CANCELLED"}),
            timeout=120,
        )
        permits.release(64)  # whatever asks may go on now: only the tile in flight does
        _wait_for(lambda: srv.server.admission.admitted == 0, timeout=120)
        assert seg.calls == 2


def test_full_queue_is_refused_at_once_with_a_retry_hint() -> None:
    pipe, _ = slow_pipeline(delay=0.02)
    cfg = ServerConfig(port=0, max_active=1, max_queued=1, request_batch=1, max_batch=1)
    with ServerThread(cfg, pipe) as srv, SamsemClient(srv.address) as client:
        a, out_a = _in_thread(lambda: client.segment(IMG))
        _wait_for(lambda: srv.server.admission.active == 1)
        b, out_b = _in_thread(lambda: client.segment(IMG))  # admitted, waits for the compute slot
        _wait_for(lambda: srv.server.admission.admitted == 2)
        t0 = time.monotonic()
        err = rpc_error(lambda: client.segment(IMG))
        assert time.monotonic() - t0 < 1.0  # at once: a and b together take > 2.5 s
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "server busy: 1 requests computing and 1 queued" in err.details()
        assert retry_after_s(err) >= 0.1
        a.join()
        b.join()
        expected = pipe.segment(IMG).mask
        np.testing.assert_array_equal(out_a["value"].mask, expected)
        np.testing.assert_array_equal(out_b["value"].mask, expected)
        assert out_b["value"].queue_seconds > 0.1  # b waited for a
        assert client.segment(lines_image(64, 64)).mask.shape == (64, 64)


def test_graceful_shutdown_drains_in_flight_calls() -> None:
    pipe, _ = slow_pipeline(delay=0.02)
    srv = ServerThread(ServerConfig(port=0, request_batch=1, max_batch=1), pipe)
    try:
        client = SamsemClient(srv.address)
        channel = grpc.insecure_channel(srv.address)
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        a, out_a = _in_thread(lambda: client.segment(IMG))
        _wait_for(lambda: srv.server.admission.active == 1)
        stopping = srv.begin_stop(grace_s=20)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
        with SamsemClient(srv.address) as late:
            err = rpc_error(lambda: late.segment(lines_image(64, 64), timeout=5))
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        a.join()
        np.testing.assert_array_equal(out_a["value"].mask, pipe.segment(IMG).mask)  # finished, not cut
        stopping.result(timeout=20)
        client.close()
        channel.close()
    finally:
        srv.stop()


def test_shutdown_cancels_calls_that_outlast_the_grace_period() -> None:
    pipe, seg = slow_pipeline(delay=0.1)
    srv = ServerThread(ServerConfig(port=0, request_batch=1, max_batch=1), pipe)
    try:
        with SamsemClient(srv.address) as client:
            a, out_a = _in_thread(lambda: client.segment(IMG))
            _wait_for(lambda: seg.calls >= 1)
            t0 = time.monotonic()
            srv.begin_stop(grace_s=0.5).result(timeout=10)
            assert time.monotonic() - t0 < 3
            a.join(timeout=10)
            assert isinstance(out_a.get("error"), grpc.RpcError)
            assert out_a["error"].code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
            assert seg.calls < 64 and _stops_working(seg)
    finally:
        srv.stop()


@pytest.mark.parametrize("method", ["GetModelInfo", "Health"])
def test_stopped_server_is_unavailable(method) -> None:
    pipe, _ = slow_pipeline()
    srv = ServerThread(ServerConfig(port=0), pipe)
    address = srv.address
    srv.stop()
    with SamsemClient(address, timeout=2) as client:
        call = client.model_info if method == "GetModelInfo" else client.health
        assert rpc_error(call).code() == grpc.StatusCode.UNAVAILABLE
