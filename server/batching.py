"""Cross-request batching: many request threads share one model through a coalescing queue.

Every request runs the pipeline in its own worker thread; the pipeline's segmenters are replaced by a
:class:`BatchingSegmenter`, whose ``predict`` puts the request's small batch into a queue and waits.
One batcher thread takes queued batches together, up to ``max_batch`` model inputs, calls the real
segmenter once and hands each request its slice of the result. It waits up to ``max_delay_s`` for
more work only while some registered request (:meth:`BatchingSegmenter.session`) has not yet queued
its next batch, so a lone request is never delayed.

Over a :class:`~samsem.runtime.models.segmenter.TensorSegmenter` (a model on CUDA through the torch or
AOTInductor backend) the batcher is one too: ``predict_tensors`` coalesces device tensors the same way
(never mixed with numpy batches), so a served pipeline runs the device-resident stages.

Cancellation: a request's :class:`Ticket` (cancel flag + deadline) is bound to its worker thread with
:func:`bind_ticket`; ``predict`` and the pipeline's progress callback call :meth:`Ticket.check`, which
raises :class:`Cancelled`, so a cancelled or expired call stops at its next batch and its queued
inputs are dropped before they reach the model.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from samsem.errors import ConfigError
from samsem.runtime.models.segmenter import Segmenter, TensorSegmenter, tensor_device_of

_WAIT_POLL_S = 0.05  # how often a waiting request re-checks its ticket


class Cancelled(Exception):
    """The request's work was stopped: ``reason`` is "cancelled", "deadline exceeded" or a shutdown note."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Ticket:
    """Cancellation state of one request or job: a flag settable from any thread and an optional deadline.

    deadline: ``time.monotonic()`` value after which :meth:`check` raises, or None.
    """

    def __init__(self, deadline: float | None = None) -> None:
        self.deadline = deadline
        self._event = threading.Event()
        self._reason = "cancelled"

    def cancel(self, reason: str = "cancelled") -> None:
        """Ask the work to stop at its next check."""
        if not self._event.is_set():
            self._reason = reason
            self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set() or (self.deadline is not None and time.monotonic() > self.deadline)

    def check(self) -> None:
        """Raise :class:`Cancelled` when cancelled or past the deadline."""
        if self._event.is_set():
            raise Cancelled(self._reason)
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise Cancelled("deadline exceeded")


_ticket: ContextVar[Ticket | None] = ContextVar("samsem_ticket", default=None)


@contextlib.contextmanager
def bind_ticket(ticket: Ticket) -> Iterator[None]:
    """Make ``ticket`` the current thread's ticket (checked by :meth:`BatchingSegmenter.predict`)."""
    token = _ticket.set(ticket)
    try:
        yield
    finally:
        _ticket.reset(token)


@dataclass
class BatchStats:
    """What one coalesced model call did: inputs, requests merged, queue waits (s) and compute (s)."""

    size: int
    requests: int
    waits: list[float]
    compute_s: float


@dataclass(eq=False)  # identity, not array comparison, for queue removal
class _Pending:
    images: Any  # (b, S, S) float32: a numpy array, or a device tensor when ``tensors``
    points: Any  # (b, P, 2) float32 of the same kind, or None
    ticket: Ticket | None
    tensors: bool
    queued_at: float = field(default_factory=time.monotonic)
    future: Future = field(default_factory=Future)

    @property
    def key(self) -> tuple[object, ...]:
        """Requests can share a model call only when their inputs are of one kind and their prompts stack."""
        return (self.tensors, None if self.points is None else tuple(self.points.shape[1:]))


def _concat(parts: Sequence[Any], tensors: bool) -> Any:
    if not tensors:
        return np.concatenate(parts)
    import torch

    return torch.cat(list(parts))


class BatchingSegmenter:
    """A :class:`Segmenter` that coalesces ``predict`` calls from many threads into model calls, and a
    :class:`TensorSegmenter` on the device of ``inner``'s tensor path (``tensor_device`` None: it has none).

    inner: the real segmenter; max_batch: most model inputs per call (a single larger request runs
    alone); max_delay_s: longest time the first queued input waits for company;
    on_batch: called with :class:`BatchStats` after every model call (metrics).
    """

    def __init__(
        self,
        inner: Segmenter,
        max_batch: int = 16,
        max_delay_s: float = 0.005,
        on_batch: Callable[[BatchStats], None] | None = None,
        name: str = "batcher",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.inner = inner
        self.input_size = inner.input_size
        self.uses_prompts = inner.uses_prompts
        self.tensor_device = tensor_device_of(inner)
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.on_batch = on_batch
        self._cond = threading.Condition()
        self._queue: deque[_Pending] = deque()
        self._sessions = 0
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- request side
    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Register a request that will call ``predict`` (the batcher waits only for registered ones)."""
        with self._cond:
            self._sessions += 1
        try:
            yield
        finally:
            with self._cond:
                self._sessions -= 1
                self._cond.notify_all()

    @property
    def queue_depth(self) -> int:
        """Model inputs waiting for the model."""
        with self._cond:
            return sum(len(p.images) for p in self._queue)

    def predict(self, images: np.ndarray, points: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Segmenter protocol: images (B, S, S) float32, points (B, P, 2) | None -> (probs, scores)."""
        return self._submit(np.ascontiguousarray(images, np.float32), points, tensors=False)

    def predict_tensors(self, images: Any, points: Any | None) -> tuple[Any, Any]:
        """TensorSegmenter protocol: :meth:`predict` on float32 tensors of ``tensor_device``."""
        if self.tensor_device is None:
            raise ConfigError(f"{type(self.inner).__name__} has no tensor path")
        return self._submit(images, points, tensors=True)

    def _submit(self, images: Any, points: Any | None, tensors: bool) -> tuple[Any, Any]:
        """Queue one request's batch and wait for its slice of the model call's result."""
        ticket = _ticket.get()
        if ticket is not None:
            ticket.check()
        item = _Pending(images, points, ticket, tensors)
        with self._cond:
            if self._closed:
                raise Cancelled("server shutting down")
            self._queue.append(item)
            self._cond.notify_all()
        while True:
            try:
                return item.future.result(timeout=_WAIT_POLL_S)
            except TimeoutError:
                if ticket is not None and ticket.cancelled:
                    with self._cond:
                        if item in self._queue:  # not taken yet: withdraw it
                            self._queue.remove(item)
                    ticket.check()

    def close(self) -> None:
        """Stop the batcher thread; queued and later requests get :class:`Cancelled`."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    # ---------------------------------------------------------------- batcher thread
    def _take(self) -> list[_Pending] | None:
        """Wait for work and return the next batch (None once closed)."""
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                for p in self._queue:
                    p.future.set_exception(Cancelled("server shutting down"))
                self._queue.clear()
                return None
            first = self._queue[0]
            until = first.queued_at + self.max_delay_s
            while not self._closed:
                same = [p for p in self._queue if p.key == first.key]
                waiting_for_others = len(self._queue) < self._sessions
                remaining = until - time.monotonic()
                if (
                    sum(len(p.images) for p in same) >= self.max_batch
                    or not waiting_for_others
                    or remaining <= 0
                ):
                    break
                self._cond.wait(remaining)
            taken: list[_Pending] = []
            size = 0
            for p in list(self._queue):
                if p.key != first.key:
                    continue
                if taken and size + len(p.images) > self.max_batch:
                    break
                self._queue.remove(p)
                taken.append(p)
                size += len(p.images)
            return taken

    def _loop(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            live = []
            for p in taken:
                try:
                    if p.ticket is not None:
                        p.ticket.check()  # its own reason: "cancelled by CancelJob", "deadline exceeded", ...
                except Cancelled as exc:
                    p.future.set_exception(exc)
                else:
                    live.append(p)
            if not live:
                continue
            start = time.monotonic()
            tensors = live[0].tensors
            images = _concat([p.images for p in live], tensors)
            points = None if live[0].points is None else _concat([p.points for p in live], tensors)
            try:
                if tensors:
                    assert isinstance(self.inner, TensorSegmenter)  # tensor_device was not None
                    probs, scores = self.inner.predict_tensors(images, points)
                else:
                    probs, scores = self.inner.predict(images, points)
            except Exception as exc:  # the model failed: every request in the batch gets the error
                for p in live:
                    p.future.set_exception(exc)
                continue
            done = time.monotonic()
            at = 0
            for p in live:
                n = len(p.images)
                p.future.set_result((probs[at : at + n], scores[at : at + n]))
                at += n
            if self.on_batch is not None:
                self.on_batch(
                    BatchStats(len(images), len(live), [start - p.queued_at for p in live], done - start)
                )
