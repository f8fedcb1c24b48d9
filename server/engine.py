"""The server's model side: one pipeline's segmenters behind batchers, shared by every request and job."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace

from samsem.errors import InputError, SamsemError
from samsem.runtime.config import parse_request_options
from samsem.runtime.models.segmenter import Segmenter
from samsem.runtime.pipeline import Pipeline
from samsem.server.batching import BatchingSegmenter, BatchStats, Ticket, bind_ticket


class Engine:
    """Wraps ``pipeline``'s segmenters in :class:`BatchingSegmenter` s and builds per-request pipelines.

    Every per-request pipeline uses ``request_batch`` as its batch size (small, so that concurrent
    requests fill the batcher's ``max_batch`` together) and the stage set ``pipeline`` chose (the
    device-resident stages when its models run on CUDA tensors: the batchers pass tensors through). One
    segmenter serving both scales gets one batcher, keeping the pipeline's mixed-scale batches.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        max_batch: int,
        max_delay_s: float,
        request_batch: int,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        wrapped: dict[int, BatchingSegmenter] = {}

        def wrap(model: Segmenter | None, scale: int) -> BatchingSegmenter | None:
            if model is None:
                return None
            if id(model) not in wrapped:
                wrapped[id(model)] = BatchingSegmenter(
                    model, max_batch, max_delay_s, on_batch, name=f"samsem-batcher-{scale}"
                )
            return wrapped[id(model)]

        self.model1 = wrap(pipeline.model1, 1)
        self.model2 = wrap(pipeline.model2, 2)
        self.batchers = list(wrapped.values())
        self.options = replace(pipeline.config.options, batch_size=request_batch)
        self.config = pipeline.config.with_options(self.options)
        self.info = pipeline.info
        self.device = pipeline.device or "host"
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s

    def pipeline(self, options: Mapping[str, str]) -> Pipeline:
        """A pipeline over the shared batchers with the request's options applied (InputError if invalid;
        :data:`~samsem.runtime.config.REQUEST_OPTIONS` says which a request may set)."""
        config = self.config.with_options(parse_request_options(self.options, options))
        try:
            return Pipeline(self.model1, self.model2, config, self.info, device=self.device)
        except SamsemError as exc:
            raise InputError(None, f"options not supported by this server's model: {exc}") from None

    @contextlib.contextmanager
    def session(self, ticket: Ticket) -> Iterator[None]:
        """Run pipeline work in this thread: registered with the batchers, stoppable through ``ticket``."""
        with contextlib.ExitStack() as stack:
            for b in self.batchers:
                stack.enter_context(b.session())
            stack.enter_context(bind_ticket(ticket))
            yield

    def queue_depth(self) -> int:
        """Model inputs waiting in the batchers."""
        return sum(b.queue_depth for b in self.batchers)

    def close(self) -> None:
        """Stop the batcher threads."""
        for b in self.batchers:
            b.close()
