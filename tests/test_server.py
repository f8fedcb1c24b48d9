"""The gRPC service end to end on loopback with a tiny random SAM2: exact masks, batching, bad input,
request ids, model info, metrics, health and reflection. Helpers here are shared by test_server_*.py."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from samsem.errors import EngineError
from samsem.io import read_image, write_image
from samsem.runtime.config import PipelineConfig
from samsem.runtime.load import load_pipeline
from samsem.runtime.models.registry import save_model
from samsem.runtime.pipeline import Pipeline
from samsem.runtime.stages.tiling import TilingConfig
from samsem.server import samsem_pb2 as pb
from samsem.server.app import SERVICE_NAME, ServerConfig, ServerThread
from samsem.server.client import SamsemClient

# ------------------------------------------------------------------------------------------ helpers


def lines_image(h: int, w: int, seed: int = 0, dtype=np.uint8) -> np.ndarray:
    """Bright horizontal and vertical lines on a noisy dark background: (h, w) uint8/uint16."""
    rng = np.random.default_rng(seed)
    top = 255 if dtype == np.uint8 else 4000
    img = rng.normal(top * 0.2, top * 0.05, (h, w))
    for y in range(int(rng.integers(3, 12)), h - 6, 19):
        img[
            y : y + int(rng.integers(3, 8)), int(rng.integers(0, w // 4)) : w - int(rng.integers(0, w // 4))
        ] = top * 0.8
    for x in range(7, w - 6, 53):
        img[:, x : x + 4] = top * 0.75
    return np.clip(img, 0, top).astype(dtype)


class SlowSegmenter:
    """Threshold-at-0.5 segmenter that sleeps ``delay`` s per call and counts its calls; ``gate`` (called
    with the call's number before it answers) lets a test hold a call until an event of its own."""

    uses_prompts = False

    def __init__(
        self, input_size: int = 64, delay: float = 0.1, gate: Callable[[int], object] | None = None
    ) -> None:
        self.input_size = input_size
        self.delay = delay
        self.gate = gate
        self.calls = 0

    def predict(self, images, points=None):
        self.calls += 1
        if self.gate is not None:
            self.gate(self.calls)
        time.sleep(self.delay)
        return (images > 0.5).astype(np.float32), np.ones(len(images), np.float32)


def slow_pipeline(
    delay: float = 0.1, patch: int = 64, gate: Callable[[int], object] | None = None
) -> tuple[Pipeline, SlowSegmenter]:
    seg = SlowSegmenter(patch, delay, gate)
    cfg = PipelineConfig(tiling=TilingConfig(patch_size=patch), single_scale=2)
    return Pipeline(None, seg, cfg), seg


def make_tiny_checkpoint(folder: Path) -> Path:
    """A tiny random SAM2 (runtime.sam2_model.tiny_spec, 128-px input) saved as a samsem checkpoint."""
    from samsem.runtime.models import sam2 as sm

    spec = sm.tiny_spec(128)
    path = folder / "tiny_sam2.pt"
    save_model(path, sm.build(spec, seed=0), spec)
    return path


def assert_reports_match(remote: dict, local: dict) -> None:
    """Equal but for timings, the request id, the (per-request) batch size and float32 noise in model
    scores (batch composition changes the order of float reductions by a few ulp)."""
    local = json.loads(json.dumps(local))
    for r in (remote, local):
        r.pop("timings_s"), r.pop("request_id", None), r["config"].pop("batch_size")
    scores = [
        (a.pop("score"), b.pop("score")) for a, b in zip(remote["patches"], local["patches"], strict=True)
    ]
    scores.append((remote.pop("model1_score"), local.pop("model1_score")))
    assert remote == local
    for a, b in scores:
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)


@contextlib.contextmanager
def serving(
    config: ServerConfig, pipeline: Pipeline, **client_kw
) -> Iterator[tuple[ServerThread, SamsemClient]]:
    """An in-process server on loopback and a client connected to it."""
    with ServerThread(config, pipeline) as srv, SamsemClient(srv.address, **client_kw) as client:
        yield srv, client


def rpc_error(fn) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory) -> Pipeline:
    return load_pipeline(make_tiny_checkpoint(tmp_path_factory.mktemp("model")))


@pytest.fixture(scope="module")
def server(tiny_pipeline):
    with ServerThread(ServerConfig(port=0, metrics_port=0, max_tile_pixels=512 * 512), tiny_pipeline) as srv:
        yield srv


@pytest.fixture
def client(server):
    with SamsemClient(server.address, chunk_bytes=64 * 1024) as c:
        yield c


# ------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("form", ["uint8", "uint16", "png", "tiff"])
def test_streamed_mask_equals_local_runtime(form, tiny_pipeline, client, tmp_path) -> None:
    dtype = np.uint16 if form == "uint16" else np.uint8
    img = lines_image(700, 900, seed=1, dtype=dtype)
    source: np.ndarray | Path = img
    if form in ("png", "tiff"):
        source = tmp_path / f"img.{'png' if form == 'png' else 'tif'}"
        write_image(source, img)
        img = read_image(source)
    local = tiny_pipeline.segment(img, "img")
    seen: list[tuple[int, int]] = []
    out = client.segment(source, name="img", progress=lambda d, t: seen.append((d, t)))
    np.testing.assert_array_equal(out.mask, local.mask)
    assert out.mask.dtype == np.uint8 and 0 < out.mask.mean() < 1
    assert_reports_match(out.report, local.report.to_json())
    total = tiny_pipeline.count_inputs(*img.shape)
    assert seen[0] == (0, total) and seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_options_reach_the_pipeline(tiny_pipeline, client) -> None:
    from dataclasses import replace

    img = lines_image(300, 400, seed=2)
    out = client.segment(img, options={"single_scale": "1", "seed": "3", "fallback": "model2"})
    cfg = replace(tiny_pipeline.config, single_scale=1, seed=3)
    local = Pipeline(tiny_pipeline.model1, tiny_pipeline.model2, cfg, tiny_pipeline.info).segment(img)
    np.testing.assert_array_equal(out.mask, local.mask)
    assert out.report["mode"] == "single-scale 1" and out.report["config"]["seed"] == 3
    assert out.report["config"]["decision"]["fallback"] == "model2"


def test_segment_tile_equals_local_and_refuses_large_images(tiny_pipeline, client) -> None:
    img = lines_image(256, 300, seed=3)
    out = client.segment_tile(img)
    np.testing.assert_array_equal(out.mask, tiny_pipeline.segment(img).mask)
    err = rpc_error(lambda: client.segment_tile(lines_image(600, 600)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "more than the server's limit of 262144" in err.details()


def test_sixteen_concurrent_clients_are_batched_together(tiny_pipeline, server) -> None:
    images = [lines_image(600, 600, seed=10 + i) for i in range(16)]
    expected = [tiny_pipeline.segment(im).mask for im in images]
    reg = server.server.metrics.registry
    before_calls = reg.get_sample_value("samsem_batch_requests_count") or 0.0
    before_single = reg.get_sample_value("samsem_batch_requests_bucket", {"le": "1.0"}) or 0.0
    results: list[bool | str] = [False] * 16
    barrier = threading.Barrier(16)

    def worker(i: int) -> None:
        try:
            with SamsemClient(server.address) as c:
                c.health()
                barrier.wait(timeout=30)
                results[i] = bool(np.array_equal(c.segment(images[i]).mask, expected[i]))
        except Exception as exc:  # reported below
            results[i] = repr(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 16
    calls = reg.get_sample_value("samsem_batch_requests_count") - before_calls
    single = reg.get_sample_value("samsem_batch_requests_bucket", {"le": "1.0"}) - before_single
    assert single < calls  # some model calls served more than one request
    assert reg.get_sample_value("samsem_requests_total", {"method": "Segment", "code": "OK"}) >= 16


def _raw_header(h: int = 64, w: int = 64, dtype: str = "uint8", **options: str) -> pb.SegmentRequest:
    return pb.SegmentRequest(
        header=pb.ImageHeader(name="bad", raw=pb.RawLayout(dtype=dtype, height=h, width=w), options=options)
    )


def _enc_header(fmt: str, size: int) -> pb.SegmentRequest:
    return pb.SegmentRequest(
        header=pb.ImageHeader(name="bad", encoded=pb.EncodedLayout(format=fmt, size=size))
    )


def _png_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "ok.png"
    write_image(path, lines_image(64, 64))
    return path.read_bytes()


def _chunk(data: bytes) -> pb.SegmentRequest:
    return pb.SegmentRequest(chunk=data)


BAD_STREAMS = {
    "empty stream": (lambda png: [], "empty request stream"),
    "no header": (lambda png: [_chunk(b"\0" * 10)], "the first message must be the header"),
    "truncated": (
        lambda png: [_raw_header(), _chunk(b"\0" * 4000)],
        "truncated stream: received 4000 of 4096 bytes",
    ),
    "too many bytes": (
        lambda png: [_raw_header(), _chunk(b"\0" * 4096), _chunk(b"\0")],
        "header/bytes mismatch: received 4097 bytes",
    ),
    "second header": (lambda png: [_raw_header(), _chunk(b"\0" * 10), _raw_header()], "a second header"),
    "corrupt png": (
        lambda png: [_enc_header("png", len(png)), _chunk(png[:40] + b"\x07" * (len(png) - 40))],
        "png data: corrupt",
    ),
    "truncated png": (
        lambda png: [_enc_header("png", len(png) // 2), _chunk(png[: len(png) // 2])],
        "png data: corrupt or truncated PNG",
    ),
    "not a tiff": (lambda png: [_enc_header("tiff", len(png)), _chunk(png)], "the data is not a tiff file"),
    "zero height": (lambda png: [_raw_header(h=0)], "zero-sized image (0x64)"),
    "oversize": (lambda png: [_raw_header(h=1 << 16, w=1 << 15)], "more than the server's limit"),
    "bad dtype": (lambda png: [_raw_header(dtype="float32")], "unsupported dtype 'float32'"),
    "unknown option": (lambda png: [_raw_header(colour="red")], "unknown option(s) 'colour'"),
    "bad option value": (lambda png: [_raw_header(seed="x")], "bad value 'x' for option 'seed'"),
    "no layout": (
        lambda png: [pb.SegmentRequest(header=pb.ImageHeader(name="x"))],
        "the header has no layout",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_STREAMS))
def test_bad_input_is_invalid_argument_and_server_keeps_serving(case, client, tmp_path) -> None:
    make, message = BAD_STREAMS[case]
    requests = make(_png_bytes(tmp_path))
    err = rpc_error(lambda: list(client.stub.Segment(iter(requests), timeout=30)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert message in err.details()
    img = lines_image(100, 120)
    assert client.segment(img).mask.shape == (100, 120)  # the server still answers


class FailingOnceSegmenter(SlowSegmenter):
    """Raises EngineError on its first call (an engine fault), then thresholds like SlowSegmenter."""

    def predict(self, images, points=None):
        self.calls += 1
        if self.calls == 1:
            raise EngineError("engine.onnx: onnxruntime failed: out of device memory")
        return (images > 0.5).astype(np.float32), np.ones(len(images), np.float32)


def test_engine_fault_is_internal_not_invalid_argument() -> None:
    seg = FailingOnceSegmenter(64, 0.0)
    pipeline = Pipeline(None, seg, PipelineConfig(tiling=TilingConfig(patch_size=64), single_scale=2))
    with serving(ServerConfig(port=0, metrics_port=0), pipeline) as (_, client):
        err = rpc_error(lambda: client.segment(lines_image(64, 64)))
        assert err.code() == grpc.StatusCode.INTERNAL and "out of device memory" in err.details()
        assert client.segment(lines_image(64, 64)).mask.shape == (64, 64)  # the server still answers


def test_request_id_is_echoed_and_generated(client) -> None:
    img = lines_image(64, 64)
    out = client.segment(img, request_id="my-request-1")
    assert out.request_id == "my-request-1" and out.report["request_id"] == "my-request-1"
    call = client.stub.Segment(iter([_raw_header(), _chunk(img.tobytes())]))
    list(call)
    rid = dict(call.initial_metadata())["x-request-id"]
    assert len(rid) == 16 and rid != "my-request-1"


def test_model_info(client, tiny_pipeline) -> None:
    info = client.model_info()
    assert json.loads(info.manifest_json) == tiny_pipeline.info.to_json()
    assert (info.backend, info.device, info.precision) == ("torch", "cpu", "fp32")  # as loaded, not "auto"
    assert (info.max_batch_size, info.request_batch_size) == (16, 4)
    assert info.chunk_bytes == 1 << 20 and info.max_tile_pixels == 512 * 512
    assert json.loads(info.config_json)["batch_size"] == 4


def test_metrics_endpoint(server, client) -> None:
    client.segment(lines_image(64, 64))
    text = (
        urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics", timeout=10)
        .read()
        .decode()
    )
    for name in (
        'samsem_requests_total{code="OK",method="Segment"}',
        "samsem_queue_seconds_bucket",
        "samsem_compute_seconds_count",
        "samsem_tiles_total",
        "samsem_batch_size_bucket",
        "samsem_queue_depth",
    ):
        assert name in text, name


def test_health_and_reflection(server) -> None:
    from grpc_health.v1 import health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with grpc.insecure_channel(server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE_NAME):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        db = ProtoReflectionDescriptorDatabase(channel)
        services = set(db.get_services())
        assert {"samsem.v1.Segmentation", "grpc.health.v1.Health"} <= services
        fd = db.FindFileContainingSymbol("samsem.v1.Segmentation")
        assert fd.name == "samsem/v1/samsem.proto"
        assert [m.name for m in fd.service[0].method][:2] == ["Segment", "SegmentTile"]
