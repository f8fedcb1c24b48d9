"""Server building blocks without a network: batcher, admission, wire codec, option parsing, tokens."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import zlib

import numpy as np
import pytest

from samsem.errors import InputError
from samsem.runtime.config import RunOptions, parse_request_options
from samsem.server import samsem_pb2 as pb
from samsem.server.admission import Admission, Busy
from samsem.server.batching import BatchingSegmenter, Cancelled, Ticket, bind_ticket
from samsem.server.codec import MaskAssembler, RawAssembler, compress_range, parse_header
from samsem.server.security import load_tokens, token_matches


class Doubler:
    """Segmenter whose output is twice its input; records the size of every model call."""

    uses_prompts = False
    input_size = 8

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[int] = []
        self.delay = delay

    def predict(self, images, points=None):
        self.calls.append(len(images))
        time.sleep(self.delay)
        return images * 2, images[:, 0, 0].copy()


def _run_threads(seg: BatchingSegmenter, n_threads: int, batches: int) -> list[bool]:
    ok = [False] * n_threads

    def worker(i: int) -> None:
        with seg.session():
            good = True
            for b in range(batches):
                x = np.full((2, 8, 8), i * 100 + b, np.float32)
                probs, scores = seg.predict(x, None)
                good &= bool(np.all(probs == 2 * x)) and bool(np.all(scores == i * 100 + b))
            ok[i] = good

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ok


def test_batcher_coalesces_concurrent_requests_and_routes_results() -> None:
    inner = Doubler(delay=0.01)
    seg = BatchingSegmenter(inner, max_batch=8, max_delay_s=0.05)
    try:
        ok = _run_threads(seg, n_threads=6, batches=5)
    finally:
        seg.close()
    assert all(ok)  # every thread got exactly its own slice back
    assert sum(inner.calls) == 6 * 5 * 2
    assert max(inner.calls) > 2  # inputs of several requests shared a model call
    assert max(inner.calls) <= 8


def test_batcher_does_not_wait_for_a_lone_request() -> None:
    seg = BatchingSegmenter(Doubler(), max_batch=16, max_delay_s=0.5)
    try:
        with seg.session():
            t0 = time.monotonic()
            for _ in range(5):
                seg.predict(np.zeros((1, 8, 8), np.float32), None)
            elapsed = time.monotonic() - t0
    finally:
        seg.close()
    assert elapsed < 0.25  # far below 5 x max_delay


def test_batcher_drops_cancelled_work_with_the_tickets_own_reason() -> None:
    """Work whose ticket was cancelled while it queued ends with that ticket's reason (a job's "cancelled
    by CancelJob"), not a generic one: under load the batcher, not the waiting caller, sees it first."""

    class CancelledOnceQueued(Ticket):
        def __init__(self) -> None:
            super().__init__()
            self.checks = 0

        @property
        def cancelled(self) -> bool:
            return self.checks > 0

        def check(self) -> None:
            self.checks += 1
            if self.checks > 1:  # the caller's check before queueing passes
                raise Cancelled("cancelled by CancelJob")

    inner = Doubler()
    seg = BatchingSegmenter(inner, max_batch=1, max_delay_s=0.0)
    try:
        with bind_ticket(CancelledOnceQueued()), pytest.raises(Cancelled) as err:
            seg.predict(np.ones((1, 8, 8), np.float32), None)
    finally:
        seg.close()
    assert err.value.reason == "cancelled by CancelJob" and inner.calls == []


def test_batcher_drops_cancelled_work() -> None:
    inner = Doubler(delay=0.3)
    seg = BatchingSegmenter(inner, max_batch=1, max_delay_s=0.0)
    errors: list[str] = []
    ticket = Ticket()

    def blocker() -> None:
        seg.predict(np.zeros((1, 8, 8), np.float32), None)

    def victim() -> None:
        with bind_ticket(ticket):
            try:
                seg.predict(np.ones((1, 8, 8), np.float32), None)
            except Cancelled as exc:
                errors.append(exc.reason)

    try:
        a = threading.Thread(target=blocker)
        a.start()
        time.sleep(0.05)  # the model is busy with the blocker
        b = threading.Thread(target=victim)
        b.start()
        time.sleep(0.05)
        ticket.cancel("cancelled by test")
        a.join()
        b.join()
        time.sleep(0.05)
    finally:
        seg.close()
    assert errors == ["cancelled by test"]
    assert inner.calls == [1]  # the cancelled input never reached the model


def test_ticket_deadline() -> None:
    t = Ticket(deadline=time.monotonic() - 1)
    with pytest.raises(Cancelled, match="deadline exceeded"):
        t.check()
    Ticket(deadline=time.monotonic() + 60).check()


def test_admission_refuses_at_once_when_full_and_honours_budget() -> None:
    async def scenario() -> None:
        adm = Admission(max_active=1, max_queued=1, memory_budget=1000)
        a = adm.admit(400)
        assert await a.start() < 0.01
        b = adm.admit(400)  # queued
        with pytest.raises(Busy, match="server busy") as full:
            adm.admit(0)
        assert full.value.retry_after_s > 0
        waiter = asyncio.ensure_future(b.start())
        await asyncio.sleep(0.02)
        assert not waiter.done()  # b waits for a's compute slot
        a.release()
        await asyncio.wait_for(waiter, 1)
        with pytest.raises(Busy, match="buffer bytes"):
            adm.admit(700)  # 400 + 700 > budget, but fits once b is done
        with pytest.raises(InputError, match="memory budget"):
            adm.admit(1001)  # can never fit
        b.release()
        assert (adm.admitted, adm.active, adm.reserved) == (0, 0, 0)

    asyncio.run(scenario())


def test_slot_is_freed_by_its_last_holder() -> None:
    async def scenario() -> None:
        adm = Admission(max_active=1, max_queued=0, memory_budget=10)
        s = adm.admit(5)
        await s.start()
        s.hold()
        s.release()
        assert adm.admitted == 1 and adm.reserved == 5
        s.release()
        assert adm.admitted == 0 and adm.reserved == 0

    asyncio.run(scenario())


def _header(**raw) -> pb.ImageHeader:
    return pb.ImageHeader(name="x", raw=pb.RawLayout(**raw))


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (_header(dtype="float32", height=4, width=4), "unsupported dtype 'float32'"),
        (_header(dtype="uint8", height=0, width=4), "zero-sized image"),
        (_header(dtype="uint8", height=100, width=100), "more than the server's limit of 5000"),
        (pb.ImageHeader(name="x"), "the header has no layout"),
        (pb.ImageHeader(encoded=pb.EncodedLayout(format="jpeg", size=3)), "unsupported encoded format"),
        (pb.ImageHeader(encoded=pb.EncodedLayout(format="png", size=0)), "encoded size is 0"),
        (pb.ImageHeader(encoded=pb.EncodedLayout(format="png", size=10**9)), "exceeds the server's limit"),
    ],
)
def test_parse_header_refuses(header: pb.ImageHeader, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_header(header, max_pixels=5000, max_encoded_bytes=10**6)


def test_raw_assembler_little_endian_uint16_and_size_checks() -> None:
    img = (np.arange(12, dtype=np.uint16) * 1000).reshape(3, 4)
    spec = parse_header(_header(dtype="uint16", height=3, width=4), 100, 100)
    asm = RawAssembler(spec)
    data = img.astype("<u2").tobytes()
    asm.add(data[:5])
    with pytest.raises(InputError, match="truncated stream: received 5 of 24 bytes"):
        asm.finish()
    asm.add(data[5:])
    np.testing.assert_array_equal(asm.finish(), img)
    with pytest.raises(InputError, match="header/bytes mismatch"):
        asm.add(b"\x00")


def test_mask_ranges_round_trip_and_reject_gaps() -> None:
    rng = np.random.default_rng(1)
    mask = (rng.random((37, 53)) > 0.7).astype(np.uint8)
    asm = MaskAssembler(37, 53)
    step = 500
    for off in range(0, mask.size, step):
        n = min(step, mask.size - off)
        asm.add(
            pb.MaskChunk(height=37, width=53, offset=off, length=n, zlib_data=compress_range(mask, off, n))
        )
    assert asm.complete
    np.testing.assert_array_equal(asm.mask, mask)
    bad = MaskAssembler(37, 53)
    with pytest.raises(InputError, match="does not continue"):
        bad.add(pb.MaskChunk(height=37, width=53, offset=10, length=5, zlib_data=zlib.compress(b"\0" * 5)))


def test_request_options() -> None:
    base = RunOptions(batch_size=4)
    opts = parse_request_options(base, {"single_scale": "2", "seed": "7", "fallback": "model1"})
    assert opts == RunOptions(batch_size=4, single_scale=2, seed=7, fallback="model1")
    assert parse_request_options(base, {"single_scale": "both"}).single_scale is None
    assert parse_request_options(base, {}) == base
    with pytest.raises(InputError, match="unknown option\\(s\\) 'bogus'"):
        parse_request_options(base, {"bogus": "1"})
    with pytest.raises(InputError, match="unknown option\\(s\\) 'batch_size'"):
        parse_request_options(base, {"batch_size": "64"})  # the server's, not the request's
    with pytest.raises(InputError, match="unknown option\\(s\\) 'threshold'"):
        parse_request_options(base, {"threshold": "0.3"})  # calibrated with the model
    with pytest.raises(InputError, match="bad value 'x' for option 'seed'"):
        parse_request_options(base, {"seed": "x"})
    with pytest.raises(InputError, match="bad value '3' for option 'single_scale'"):
        parse_request_options(base, {"single_scale": "3"})
    with pytest.raises(InputError, match="option 'fallback'"):
        parse_request_options(base, {"fallback": "magic"})
    assert parse_request_options(base, {"metal": "dark"}).metal == "dark"
    with pytest.raises(InputError, match="bad value 'grey' for option 'metal'"):
        parse_request_options(base, {"metal": "grey"})
    assert parse_request_options(base, {"flatten": "0"}).flatten == 0
    assert parse_request_options(base, {"min_contrast": "0"}).min_contrast == 0
    with pytest.raises(InputError, match=r"bad value '3' for option 'min_contrast'"):
        parse_request_options(base, {"min_contrast": "3"})
    with pytest.raises(InputError, match=r"bad value '-3' for option 'flatten'.*integer in \[0"):
        parse_request_options(base, {"flatten": "-3"})


def test_tokens(tmp_path, monkeypatch) -> None:
    f = tmp_path / "tokens"
    f.write_text("# comment\nalpha\n\n beta \n")
    monkeypatch.setenv("SAMSEM_TEST_TOKENS", "gamma,delta")
    tokens = load_tokens(f, "SAMSEM_TEST_TOKENS")
    assert tokens == ("alpha", "beta", "gamma", "delta")
    assert (
        token_matches("beta", tokens) and not token_matches("bet", tokens) and not token_matches("", tokens)
    )
    (tmp_path / "empty").write_text("# none\n")
    from samsem.errors import ConfigError

    with pytest.raises(ConfigError, match="contains no token"):
        load_tokens(tmp_path / "empty")
    with pytest.raises(ConfigError, match="unset or empty"):
        load_tokens(None, "SAMSEM_TEST_UNSET_VARIABLE")


def test_batcher_coalesces_device_tensors_apart_from_arrays() -> None:
    """Tensor batches (the device-resident stages) share model calls with each other, never with numpy
    ones; every caller gets its own slice back, as a tensor."""
    import torch

    class TensorDoubler(Doubler):
        tensor_device = "cpu"

        def predict_tensors(self, images, points=None):
            self.calls.append(-len(images))  # negative: a tensor call
            return images * 2, images[:, 0, 0].clone()

    inner = TensorDoubler()
    seg = BatchingSegmenter(inner, max_batch=16, max_delay_s=60.0)  # waits for the registered sessions
    sessions = [seg.session() for _ in range(4)]  # all registered before any request queues
    for s in sessions:
        s.__enter__()
    got: dict[int, object] = {}

    def call(i: int) -> None:
        x = np.full((2, 8, 8), i, np.float32)
        got[i] = seg.predict_tensors(torch.from_numpy(x), None) if i < 3 else seg.predict(x, None)
        sessions[i].__exit__(None, None, None)

    try:
        threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        seg.close()
    assert sorted(inner.calls) == [-6, 2]  # three tensor requests in one call, the numpy one alone
    for i, (probs, scores) in got.items():
        assert isinstance(probs, torch.Tensor) == (i < 3)
        assert np.all(np.asarray(probs) == 2 * i) and np.all(np.asarray(scores) == i)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_client_upload_of_a_fifo_is_refused_before_any_call(tmp_path) -> None:
    """A FIFO named like an image is refused on its descriptor (issue 26.4), not opened for a blocking
    read in the upload's thread."""
    from samsem.server.client import SamsemClient

    os.mkfifo(tmp_path / "a.png")
    with (
        SamsemClient("127.0.0.1:9") as client,  # never reached
        pytest.raises(InputError, match=r"a\.png: is a FIFO, not a regular file"),
    ):
        client.segment(tmp_path / "a.png", timeout=30)
