"""Server-side jobs: segment files the server can read, confined to configured roots.

A job is a list of image files (inputs may name files or directories, non-recursive) whose real
paths (symlinks resolved) lie under one of the server's job roots; anything else is refused with
:class:`PathRefused`. Outputs (NAME.mask.png, .tif for large images, and NAME.report.json, as
``samsem segment`` writes them) go beside each input, or, with an output root, to the same relative
folder under it. Files whose outputs exist are skipped unless ``overwrite``. Jobs run one at a time
in a worker thread through the shared batchers, independent of any client connection; their state
is kept in memory (the most recent ``max_kept`` finished jobs) and is lost when the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from samsem.errors import InputError, SamsemError
from samsem.runtime.outputs import ImageOutputs, plan_image, write_outputs
from samsem.runtime.pipeline import FailedImage, Pipeline
from samsem.server import samsem_pb2 as pb
from samsem.server.admission import Busy
from samsem.server.batching import Cancelled, Ticket
from samsem.server.engine import Engine

FINAL_FILE = (pb.FILE_DONE, pb.FILE_SKIPPED, pb.FILE_FAILED, pb.FILE_CANCELLED)
FINAL_JOB = (pb.JOB_SUCCEEDED, pb.JOB_FAILED, pb.JOB_CANCELLED)
_HAS_OUTPUTS = (pb.FILE_DONE, pb.FILE_SKIPPED)


class PathRefused(SamsemError):
    """A job path outside the server's roots (reported as PERMISSION_DENIED)."""


class JobsDisabled(SamsemError):
    """The server has no job roots (reported as FAILED_PRECONDITION)."""


def confine(path: str, roots: Sequence[Path]) -> tuple[Path, Path]:
    """Resolve ``path`` (absolute, symlinks followed) and return (real path, the root containing it)."""
    p = Path(path)
    if not p.is_absolute():
        raise InputError(p, "job paths must be absolute", "an absolute path under one of the server's roots")
    real = Path(os.path.realpath(p))
    for root in roots:
        if real == root or real.is_relative_to(root):
            return real, root
    raise PathRefused(f"{path}: outside the server's job roots; refused")


@dataclass
class _File:
    input: Path
    out_dir: Path
    state: int = pb.FILE_PENDING
    outputs: ImageOutputs | None = None
    error: str = ""


@dataclass
class _Job:
    id: str
    files: list[_File]
    pipeline: Pipeline
    overwrite: bool
    ticket: Ticket = field(default_factory=Ticket)
    state: int = pb.JOB_QUEUED
    tiles_done: int = 0
    tiles_total: int = 0
    created: float = field(default_factory=time.time)
    started: float = 0.0
    finished: float = 0.0
    error: str = ""
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class JobManager:
    """Queue, run, report and cancel jobs; ``loop`` is the server's event loop (for WatchJob wake-ups)."""

    def __init__(
        self,
        engine: Engine,
        roots: Sequence[Path],
        output_root: Path | None,
        loop: asyncio.AbstractEventLoop,
        max_queued: int = 64,
        max_kept: int = 1000,
        on_change=None,
    ) -> None:
        self.engine = engine
        self.roots = tuple(Path(os.path.realpath(r)) for r in roots)
        self.output_root = None if output_root is None else Path(os.path.realpath(output_root))
        self.loop = loop
        self.max_queued = max_queued
        self.max_kept = max_kept
        self.on_change = on_change  # called with {state: count} after every state change (metrics)
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._closed = False
        self._worker = threading.Thread(target=self._work, name="samsem-jobs", daemon=True)
        self._worker.start()

    # ---------------------------------------------------------------- API (event loop thread)
    async def submit(self, inputs: Sequence[str], options: Mapping[str, str], overwrite: bool) -> pb.Job:
        """Validate and queue a job; raises JobsDisabled, InputError, PathRefused or Busy."""
        if not self.roots:
            raise JobsDisabled("this server has no job roots (start it with --job-root DIR)")
        if not inputs:
            raise InputError(None, "a job needs at least one input path")
        pipeline = self.engine.pipeline(options)
        files = await asyncio.to_thread(self._expand, inputs)
        with self._lock:
            if self._closed:
                raise Busy("server is shutting down", 1.0)
            queued = sum(j.state == pb.JOB_QUEUED for j in self._jobs.values())
            if queued >= self.max_queued:
                raise Busy(f"job queue full ({queued} jobs queued)", 5.0)
            job = _Job(uuid.uuid4().hex, files, pipeline, overwrite, changed=asyncio.Event())
            self._jobs[job.id] = job
            self._evict()
            snap = self._snapshot(job)
        self._queue.put(job)
        self._changed(job)
        return snap

    def get(self, job_id: str) -> pb.Job:
        """Snapshot of a job (KeyError if unknown)."""
        with self._lock:
            return self._snapshot(self._jobs[job_id])

    def cancel(self, job_id: str) -> pb.Job:
        """Ask a job to stop (a queued job is cancelled at once); returns its snapshot."""
        with self._lock:
            job = self._jobs[job_id]
            if job.state == pb.JOB_QUEUED:
                self._finish(job, pb.JOB_CANCELLED, "cancelled before it started", pb.FILE_CANCELLED)
            elif job.state == pb.JOB_RUNNING:
                job.ticket.cancel("cancelled by CancelJob")
            snap = self._snapshot(job)
        self._changed(job)
        return snap

    async def watch(self, job_id: str) -> AsyncIterator[pb.Job]:
        """The job's snapshot now and after every change, ending with its final state."""
        with self._lock:
            job = self._jobs[job_id]
        while True:
            event = job.changed
            with self._lock:
                snap = self._snapshot(job)
            yield snap
            if snap.state in FINAL_JOB:
                return
            await event.wait()

    def shutdown(self, reason: str = "server shut down") -> None:
        """Cancel queued and running jobs and stop the worker (call after the grace period)."""
        with self._lock:
            self._closed = True
            for job in self._jobs.values():
                if job.state == pb.JOB_QUEUED:
                    self._finish(job, pb.JOB_CANCELLED, reason, pb.FILE_CANCELLED)
                elif job.state == pb.JOB_RUNNING:
                    job.ticket.cancel(reason)
        self._queue.put(None)
        self._worker.join()

    def running(self) -> bool:
        """Whether a job is queued or running."""
        with self._lock:
            return any(j.state in (pb.JOB_QUEUED, pb.JOB_RUNNING) for j in self._jobs.values())

    # ---------------------------------------------------------------- internals
    def _expand(self, inputs: Sequence[str]) -> list[_File]:
        """Confine and list the inputs; output names must not collide."""
        from samsem.io import SUPPORTED_SUFFIXES

        files: list[_File] = []
        seen: dict[tuple[Path, str], Path] = {}
        for raw in inputs:
            real, root = confine(raw, self.roots)
            if real.is_dir():
                found = sorted(
                    f for f in real.iterdir() if f.is_file() and f.suffix.lower() in SUPPORTED_SUFFIXES
                )
                if not found:
                    raise InputError(raw, "directory contains no images", ", ".join(SUPPORTED_SUFFIXES))
            elif real.is_file():
                found = [real]
            else:
                raise InputError(raw, "file not found")
            for f in found:
                f, root = confine(str(f), self.roots)  # a symlink inside a root may point outside
                out_dir = (
                    f.parent if self.output_root is None else self.output_root / f.parent.relative_to(root)
                )
                key = (out_dir, f.stem)
                if key in seen:
                    if seen[key] == f:
                        continue
                    raise InputError(
                        f, f"its outputs would collide with those of {seen[key]}", "distinct file names"
                    )
                seen[key] = f
                files.append(_File(f, out_dir))
        return files

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                if job.state != pb.JOB_QUEUED:
                    continue
                job.state, job.started = pb.JOB_RUNNING, time.time()
            self._changed(job)
            self._run(job)

    def _run(self, job: _Job) -> None:
        from samsem.io import read_image

        todo: dict[str, _File] = {}
        for f in job.files:
            try:
                f.outputs, height, width = plan_image(f.input, f.out_dir)
            except SamsemError as exc:
                self._set_file(job, f, pb.FILE_FAILED, str(exc))
                continue
            if not job.overwrite and f.outputs.finished():
                self._set_file(job, f, pb.FILE_SKIPPED)
                continue
            todo[str(f.input)] = f
            job.tiles_total += job.pipeline.count_inputs(height, width)
        self._changed(job)

        def loader(f: _File):
            def load():
                job.ticket.check()
                self._set_file(job, f, pb.FILE_RUNNING)
                return read_image(f.input)

            return load

        def progress(n: int) -> None:
            job.tiles_done += n
            self._changed(job)
            job.ticket.check()

        protect = [f.input for f in job.files]
        try:
            with self.engine.session(job.ticket):
                sources = [(name, loader(f)) for name, f in todo.items()]
                for result in job.pipeline.segment_many(sources, progress=progress):
                    f = todo[result.name]
                    if isinstance(result, FailedImage):
                        self._set_file(job, f, pb.FILE_FAILED, str(result.error))
                        continue
                    try:
                        report = {**result.report.to_json(), "job": job.id}
                        write_outputs(f.outputs, result.mask, report, protect=protect)  # type: ignore[arg-type]
                    except SamsemError as exc:
                        self._set_file(job, f, pb.FILE_FAILED, str(exc))
                        continue
                    self._set_file(job, f, pb.FILE_DONE)
        except Cancelled as exc:
            with self._lock:
                self._finish(job, pb.JOB_CANCELLED, exc.reason, pb.FILE_CANCELLED)
            self._changed(job)
            return
        except Exception as exc:  # model or I/O failure: the job fails, the server goes on
            with self._lock:
                self._finish(job, pb.JOB_FAILED, f"{type(exc).__name__}: {exc}", pb.FILE_FAILED)
            self._changed(job)
            return
        with self._lock:
            ok = all(f.state in (pb.FILE_DONE, pb.FILE_SKIPPED) for f in job.files)
            self._finish(job, pb.JOB_SUCCEEDED if ok else pb.JOB_FAILED, "", pb.FILE_FAILED)
        self._changed(job)

    def _set_file(self, job: _Job, f: _File, state: int, error: str = "") -> None:
        with self._lock:
            f.state, f.error = state, error
        self._changed(job)

    def _finish(self, job: _Job, state: int, error: str, open_files: int) -> None:
        """Final state (lock held); files not yet final get ``open_files``."""
        job.state, job.error, job.finished = state, error, time.time()
        for f in job.files:
            if f.state not in FINAL_FILE:
                f.state, f.error = open_files, error or f.error

    def _evict(self) -> None:
        """Forget the oldest finished jobs beyond ``max_kept`` (lock held)."""
        finished = [k for k, j in self._jobs.items() if j.state in FINAL_JOB]
        for k in finished[: max(0, len(finished) - self.max_kept)]:
            del self._jobs[k]

    def _changed(self, job: _Job) -> None:
        """Publish a change: state counts to ``on_change``, a wake-up to the job's watchers (any thread)."""
        with self._lock:
            counts: dict[int, int] = {}
            for j in self._jobs.values():
                counts[j.state] = counts.get(j.state, 0) + 1
        if self.on_change is not None:
            self.on_change({pb.JobState.Name(s): counts.get(s, 0) for s in pb.JobState.values() if s})
        with contextlib.suppress(RuntimeError):  # a closed loop has no watchers left
            self.loop.call_soon_threadsafe(self._wake, job)

    @staticmethod
    def _wake(job: _Job) -> None:
        event, job.changed = job.changed, asyncio.Event()
        if event is not None:
            event.set()

    @staticmethod
    def _snapshot(job: _Job) -> pb.Job:
        return pb.Job(
            job_id=job.id,
            state=pb.JobState.Name(job.state),
            files=[
                pb.FileStatus(
                    input=str(f.input),
                    state=pb.FileState.Name(f.state),
                    mask_path=str(f.outputs.mask) if f.outputs and f.state in _HAS_OUTPUTS else "",
                    report_path=str(f.outputs.report) if f.outputs and f.state in _HAS_OUTPUTS else "",
                    error=f.error,
                )
                for f in job.files
            ],
            tiles_done=job.tiles_done,
            tiles_total=job.tiles_total,
            created_unix=job.created,
            started_unix=job.started,
            finished_unix=job.finished,
            error=job.error,
        )
