"""Server-side jobs: segment files the server can read, confined to configured roots, kept in SQLite.

A job is a list of image files (inputs may name files or directories, non-recursive; samsem's own
outputs and temporary files in a directory are never taken) whose real paths (symlinks resolved) lie
under one of the server's job roots; a path named outside them is refused with :class:`PathRefused`, a
file of a listed folder that leads out of them (a link) fails alone with PERMISSION_DENIED. A FIFO or
device is listed and fails when opened, without blocking (:func:`samsem.io.regular_fd`). The check is
repeated whenever a file is opened or an output is created (:mod:`samsem.server.confine`): a path that
has left the roots since (a folder replaced by a symlink) fails that file with PERMISSION_DENIED,
recorded in its status and logged. Outputs (NAME.mask.png, .tif for large images, NAME.report.json and,
when asked, vector files NAME.svg/.geojson/.gds) go beside each input, or, with an output root, to the
same relative folder under it, created without following links. Files whose outputs exist are skipped
unless ``overwrite``.

Jobs run one at a time in a worker thread through the shared batchers, independent of any client
connection. Every state change is written to the job database (:mod:`samsem.server.jobstore`): a
restarted server lists past jobs and resumes unfinished ones (queued, running, or interrupted by a
shutdown), skipping their files that had finished. With an in-memory store (no database) jobs cancelled
by a shutdown end CANCELLED instead. The most recent ``max_kept`` finished jobs are kept.

A file is FAILED only once it was tried: out of space for its outputs fails it (RESOURCE_EXHAUSTED) and
stops the job, whose untried files stay PENDING (as when a job fails otherwise).

A write the database refuses (read-only, disk full) never stops the worker: the job's state stays in
memory, the worker waits and retries the write with backoff before it goes on, and SubmitJob and
CancelJob answer :class:`StoreUnavailable` (:class:`StoreFull` when its disk is full) until the database
takes writes again, so that nothing a call acknowledged is missing from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import os
import queue
import sqlite3
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from samsem.errors import EngineError, InputError, SamsemError
from samsem.runtime.outputs import ImageOutputs, image_outputs, remove_stale_temps, write_outputs
from samsem.runtime.pipeline import FailedImage, Pipeline
from samsem.server import samsem_pb2 as pb
from samsem.server.admission import Busy
from samsem.server.batching import Cancelled, Ticket
from samsem.server.codec import check_inputs, check_size
from samsem.server.confine import PathRefused, Pins, clip, confine
from samsem.server.engine import Engine
from samsem.server.jobstore import FileRow, JobRow, JobStore
from samsem.server.observability import log

if TYPE_CHECKING:
    from samsem.io import Inputs
    from samsem.vector import VectorOptions

FINAL_FILE = (pb.FILE_DONE, pb.FILE_SKIPPED, pb.FILE_FAILED, pb.FILE_CANCELLED)
FINAL_JOB = (pb.JOB_SUCCEEDED, pb.JOB_FAILED, pb.JOB_CANCELLED)
_HAS_OUTPUTS = (pb.FILE_DONE, pb.FILE_SKIPPED)
SHUTDOWN = "server shut down"
_JOB_STATES = frozenset(pb.JobState.values()) - {pb.JOB_STATE_UNSPECIFIED}
_FILE_STATES = frozenset(pb.FileState.values()) - {pb.FILE_STATE_UNSPECIFIED}
_RETRY_S = (0.05, 5.0)  # first and longest wait between retries of a refused database write
WATCH_EVERY_S = 0.2  # WatchJob sends a running job's state at most this often (its final state at once)
_STOP_S = 10.0  # how long shutdown waits for a stopped worker (one blocked in a read is left behind)
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # a full disk, quota or file-size limit
_DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)


class JobsDisabled(SamsemError):
    """The server has no job roots (reported as FAILED_PRECONDITION)."""


class StoreUnavailable(Exception):
    """The job database cannot be written now (reported as UNAVAILABLE); ``retry_after_s`` a hint."""

    def __init__(self, message: str, retry_after_s: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StoreFull(Busy):
    """The job database's disk is full (reported as RESOURCE_EXHAUSTED, like every full server)."""


class _OutOfSpace(Exception):
    """An output could not be written for want of space: the job stops, its untried files stay pending."""


def _store_refusal(exc: sqlite3.Error | None, tail: str) -> Exception:
    """What a job call answers while the database refuses writes (``exc``: the last refusal)."""
    full = exc is not None and (
        getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc)
    )
    if full:
        return StoreFull(f"the job database's disk is full ({exc}); {tail}", 30.0)
    return StoreUnavailable(f"the job database cannot be written now ({exc}); {tail}")


@dataclass(frozen=True)
class JobLimits:
    """Per-file bounds of a job: pixels and model inputs (as for Segment requests)."""

    max_pixels: int = 1 << 30
    max_inputs: int = 1 << 62


@dataclass
class _Job:
    row: JobRow
    pipeline: Pipeline | None
    vector: VectorOptions | None
    ticket: Ticket = field(default_factory=Ticket)
    changed: asyncio.Event | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # set (on the loop) once final
    files_view: pb.Job | None = None  # the files' statuses as published (None: rebuilt when asked)


def _state_damage(row: JobRow) -> str:
    """What is wrong with a stored job's and its files' states ("" when they are states)."""
    damage = [f"jobs.state = {row.state}: not a job state"] if row.state not in _JOB_STATES else []
    damage += [
        f"file {f.input}: files.state = {f.state}: not a file state"
        for f in row.files
        if f.state not in _FILE_STATES
    ]
    return "; ".join(damage)


def _code(exc: BaseException) -> str:
    if isinstance(exc, PathRefused) or (isinstance(exc, OSError) and exc.errno in _DENIED):
        return "PERMISSION_DENIED"
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
        return "RESOURCE_EXHAUSTED"
    if isinstance(exc, EngineError):  # the model failed, not the file
        return "INTERNAL"
    return "INVALID_ARGUMENT" if isinstance(exc, SamsemError) else "INTERNAL"


class JobManager:
    """Queue, run, report and cancel jobs; ``loop`` is the server's event loop (for WatchJob wake-ups).

    store: where job state lives (None: in memory only). Unfinished jobs found in it are resumed.
    private_dir: where the links to open descriptors live (the server's spool, removed with it even
    after a crash; None: a temporary folder).
    """

    def __init__(
        self,
        engine: Engine,
        roots: Sequence[Path],
        output_root: Path | None,
        loop: asyncio.AbstractEventLoop,
        max_queued: int = 64,
        max_kept: int = 1000,
        on_change: Callable[[dict[str, int]], None] | None = None,
        store: JobStore | None = None,
        limits: JobLimits = JobLimits(),
        on_refused: Callable[[], None] | None = None,
        private_dir: Path | None = None,
    ) -> None:
        self.engine = engine
        self.roots = tuple(Path(os.path.realpath(r)) for r in roots)
        if output_root is not None:
            Path(output_root).mkdir(parents=True, exist_ok=True)
        self.output_root = None if output_root is None else Path(os.path.realpath(output_root))
        self.loop = loop
        self.max_queued = max_queued
        self.max_kept = max_kept
        self.on_change = on_change  # called with {state: count} after every state change (metrics)
        self.on_refused = on_refused  # called for every file refused when opened (metrics)
        self.limits = limits
        self.store = store if store is not None else JobStore(None)
        self.pins = Pins(private_dir)
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._closed = False
        self._stop = threading.Event()  # set by shutdown: ends the waits between write retries
        self._unsaved: set[str] = set()  # jobs whose latest state the database refused
        self._refusal: sqlite3.Error | None = None  # the database's last refusal
        self._seq = self.store.next_seq()
        resumed = self._load()
        self._worker = threading.Thread(target=self._work, name="samsem-jobs", daemon=True)
        self._worker.start()
        for job in resumed:
            self._queue.put(job)
        if resumed:
            log(logging.INFO, "resuming jobs", jobs=[j.row.id for j in resumed])

    @property
    def enabled(self) -> bool:
        return bool(self.roots)

    # ---------------------------------------------------------------- API (event loop thread)
    async def submit(
        self,
        inputs: Sequence[str],
        options: Mapping[str, str],
        overwrite: bool,
        vector: VectorOptions | None = None,
    ) -> pb.Job:
        """Validate and queue a job; raises JobsDisabled, InputError, PathRefused or Busy."""
        self._check_enabled()
        if not inputs:
            raise InputError(None, "a job needs at least one input path")
        pipeline = self.engine.pipeline(options)
        files = await asyncio.to_thread(self._expand, inputs)
        with self._lock:
            if self._closed:
                raise Busy("server is shutting down", 1.0)
            queued = sum(j.row.state == pb.JOB_QUEUED for j in self._jobs.values())
            if queued >= self.max_queued:
                raise Busy(f"job queue full ({queued} jobs queued)", 5.0)
            self._check_writable()
            self._seq += 1
            row = JobRow(
                id=uuid.uuid4().hex,
                seq=self._seq,
                state=pb.JOB_QUEUED,
                options=dict(options),
                overwrite=overwrite,
                vector={} if vector is None else dataclasses.asdict(vector),
                created=time.time(),
                files=files,
            )
            try:
                self.store.insert(row)
            except sqlite3.Error as exc:
                raise _store_refusal(exc, "try again") from None
            job = _Job(row, pipeline, vector, changed=asyncio.Event())
            self._jobs[row.id] = job
            self._evict()
            snap = self._snapshot(job)
        for f in files:
            if f.state == pb.FILE_FAILED:  # refused when listed (a link out of the roots)
                self._note_refused(job, f)
        self._queue.put(job)
        self._changed(job)
        return snap

    def get(self, job_id: str) -> pb.Job:
        """Snapshot of a job (KeyError if unknown; JobsDisabled without roots)."""
        self._check_enabled()
        with self._lock:
            return self._snapshot(self._jobs[job_id])

    def list_jobs(self, limit: int) -> list[pb.Job]:
        """Snapshots without file lists of the newest ``limit`` jobs, newest first."""
        self._check_enabled()
        with self._lock:
            jobs = list(self._jobs.values())[-limit:][::-1]
            return [self._snapshot(j, with_files=False) for j in jobs]

    def cancel(self, job_id: str) -> pb.Job:
        """Ask a job to stop (a queued job is cancelled at once); returns its snapshot."""
        self._check_enabled()
        with self._lock:
            job = self._jobs[job_id]
            self._check_writable()
            if job.row.state == pb.JOB_QUEUED:
                self._finish(job, pb.JOB_CANCELLED, "cancelled before it started", pb.FILE_CANCELLED)
                if job.row.id in self._unsaved:
                    self._queue.put(job)  # wakes the worker to retry the write (it skips the job)
                    raise _store_refusal(
                        self._refusal, "the cancel is kept in memory and written when it can be"
                    )
            elif job.row.state == pb.JOB_RUNNING:
                job.ticket.cancel("cancelled by CancelJob")
            snap = self._snapshot(job)
        self._changed(job)
        return snap

    async def watch(self, job_id: str) -> AsyncIterator[pb.Job]:
        """The job's snapshot now and after every change, ending with its final state; changes within
        :data:`WATCH_EVERY_S` of the last snapshot sent come together in the next one (a snapshot holds
        every file: one per change would cost a large job's watchers quadratic time and bytes)."""
        self._check_enabled()
        with self._lock:
            job = self._jobs[job_id]
        while True:
            event = job.changed
            if event is None:
                event = job.changed = asyncio.Event()
            with self._lock:
                snap = self._snapshot(job)
            yield snap
            if snap.state in FINAL_JOB:
                return
            with contextlib.suppress(TimeoutError):  # paced; the final state ends the wait at once
                await asyncio.wait_for(job.ended.wait(), WATCH_EVERY_S)
            await event.wait()

    def shutdown(self, reason: str = SHUTDOWN) -> None:
        """Stop the worker (call after the grace period): the running job is stopped. With a job
        database, queued and interrupted jobs stay unfinished there and resume at the next start;
        without one they are cancelled."""
        with self._lock:
            self._closed = True
            self._stop.set()
            for job in self._jobs.values():
                if job.row.state == pb.JOB_QUEUED and not self.store.persistent:
                    self._finish(job, pb.JOB_CANCELLED, reason, pb.FILE_CANCELLED)
                elif job.row.state == pb.JOB_RUNNING:
                    job.ticket.cancel(reason)
        self._queue.put(None)
        self._worker.join(_STOP_S)
        if self._worker.is_alive():  # blocked in a read (a hung file system): a daemon, left behind
            log(logging.ERROR, "job worker did not stop; shutting down without it", waited_s=_STOP_S)
        if self._unsaved:
            log(logging.ERROR, "job states not written to the job database", jobs=sorted(self._unsaved))
        self.pins.close()

    def running(self) -> bool:
        """Whether a job is queued or running."""
        with self._lock:
            return any(j.row.state in (pb.JOB_QUEUED, pb.JOB_RUNNING) for j in self._jobs.values())

    # ---------------------------------------------------------------- internals
    def _check_enabled(self) -> None:
        if not self.roots:
            raise JobsDisabled("this server has no job roots (start it with --job-root DIR)")

    def _check_writable(self) -> None:
        """Refuse a change while the database refuses writes (lock held)."""
        if self._unsaved:
            raise _store_refusal(self._refusal, "try again")

    def _save(self, job: _Job, files: list[FileRow] | None = None) -> None:
        """Write the job's state and the given files' (all: None) to the database (lock held). A refused
        write leaves the job unsaved (all of it is written at the next try: :meth:`_flush`)."""
        if job.row.id in self._unsaved:
            files = None
        try:
            self.store.update(job.row, files)
        except sqlite3.Error as exc:
            if not self._unsaved:
                log(logging.ERROR, "job database refused a write; retrying", error=str(exc))
            self._unsaved.add(job.row.id)
            self._refusal = exc
        else:
            self._unsaved.discard(job.row.id)

    def _flush(self) -> None:
        """Write the unsaved jobs, retrying with backoff until the database takes them or the manager
        shuts down (worker thread, lock not held): the worker goes on only once its states are stored."""
        wait = _RETRY_S[0]
        while True:
            with self._lock:
                if not self._unsaved:
                    return
                for job_id in sorted(self._unsaved):
                    self._save(self._jobs[job_id])
                if not self._unsaved:
                    log(logging.INFO, "job database takes writes again")
                    return
            if self._stop.wait(wait):
                return
            wait = min(2 * wait, _RETRY_S[1])

    def _load(self) -> list[_Job]:
        """Jobs of the store: finished ones are listed, unfinished ones re-queued (returned); a damaged
        one is logged and fails (its rows stay in the store)."""
        resumed = []
        for row in self.store.load():
            job = _Job(row, None, None)
            self._jobs[row.id] = job
            damage = row.damaged or _state_damage(row)
            if damage:
                log(
                    logging.ERROR,
                    "damaged job in the job database; listed as failed",
                    job_id=row.id,
                    reason=damage,
                )
                self._finish(
                    job, pb.JOB_FAILED, clip(f"damaged in the job database: {damage}"), pb.FILE_FAILED
                )
                continue
            if row.state in FINAL_JOB:
                continue
            row.state, row.started, row.error = pb.JOB_QUEUED, 0.0, ""
            row.tiles_done = row.tiles_total = 0
            for f in row.files:
                if f.state not in FINAL_FILE:
                    f.state = pb.FILE_PENDING
            try:
                job.pipeline = self.engine.pipeline(row.options)
                if row.vector:
                    from samsem.vector import VectorOptions

                    job.vector = VectorOptions(**{**row.vector, "formats": tuple(row.vector["formats"])})
            except (SamsemError, TypeError, KeyError, ValueError) as exc:  # options or vector gone bad
                self._finish(job, pb.JOB_FAILED, f"cannot resume: {exc}", pb.FILE_FAILED)
                continue
            self._save(job)
            resumed.append(job)
        self._evict()
        return resumed

    def _expand(self, inputs: Sequence[str]) -> list[FileRow]:
        """Confine and list the inputs; output names must not collide. A path named outside the roots
        refuses the job (PathRefused); a file of a listed folder that leads out of them (a link) is
        listed as failed with PERMISSION_DENIED and the rest of the folder is taken."""
        from samsem.io import SUPPORTED_SUFFIXES, is_samsem_output

        files: list[FileRow] = []
        seen: dict[tuple[Path, str], Path] = {}
        for raw in inputs:
            real, top = confine(raw, self.roots)
            if real.is_dir():
                found = sorted(
                    f
                    for f in real.iterdir()
                    if not f.is_dir() and f.suffix.lower() in SUPPORTED_SUFFIXES and not is_samsem_output(f)
                )
                if not found:
                    raise InputError(
                        None, f"{clip(raw)}: directory contains no images", ", ".join(SUPPORTED_SUFFIXES)
                    )
            elif real.exists():  # a FIFO or device too: it fails when opened
                found = [real]
            else:
                raise InputError(None, f"{clip(raw)}: file not found")
            for entry in found:
                try:
                    f, root = confine(str(entry), self.roots)  # a symlink inside a root may point outside
                except PathRefused as exc:  # refused alone (the folder itself was confined above)
                    below = str(entry.parent.relative_to(top))
                    files.append(
                        FileRow(len(files), str(entry), str(top), below, pb.FILE_FAILED, str(exc), _code(exc))
                    )
                    continue
                rel = f.parent.relative_to(root)
                key = ((self.output_root or root) / rel, f.stem)
                if key in seen:
                    if seen[key] == f:
                        continue
                    raise InputError(
                        f, f"its outputs would collide with those of {seen[key]}", "distinct file names"
                    )
                seen[key] = f
                files.append(FileRow(len(files), str(f), str(root), str(rel), pb.FILE_PENDING))
        return files

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            self._flush()
            if job is None:
                return
            with self._lock:
                if job.row.state != pb.JOB_QUEUED or self._closed:
                    continue
                job.row.state, job.row.started = pb.JOB_RUNNING, time.time()
                self._save(job, [])
            self._changed(job)
            self._flush()
            self._run(job)
            self._flush()

    def _places(self, f: FileRow) -> tuple[Path, Path, Path, Path]:
        """(input root, input path below it, output base, output folder below it) of a file; the roots
        must still be configured (PathRefused otherwise: a resumed job after a configuration change)."""
        root = Path(f.root)
        if root not in self.roots:
            raise PathRefused(f"{clip(f.input)}: its root {root} is no longer a job root; refused")
        rel = Path(f.input).relative_to(root)
        return root, rel, self.output_root or root, Path(f.out_rel)

    def _outputs(self, job: _Job, f: FileRow, height: int, width: int) -> ImageOutputs:
        _, _, base, out_rel = self._places(f)
        vector = job.vector.formats if job.vector is not None else ()
        return image_outputs(Path(f.input), base / out_rel, height, width, vector=vector)

    def _plan(self, job: _Job, f: FileRow) -> tuple[ImageOutputs, int, int, bool]:
        """(outputs, height, width, finished) of a file, opening it and its output folder confined."""
        from samsem.io import image_info

        root, rel, base, out_rel = self._places(f)
        with self.pins.file(root, rel) as src:
            info = image_info(src)
        check_size(info.height, info.width, self.limits.max_pixels)
        pipeline = job.pipeline
        assert pipeline is not None
        check_inputs(
            info.height, info.width, pipeline.count_inputs(info.height, info.width), self.limits.max_inputs
        )
        outputs = self._outputs(job, f, info.height, info.width)
        with self.pins.folder(base, out_rel) as out:
            finished = all((out / p.name).exists() for p in outputs.requested())
        return outputs, info.height, info.width, finished

    def _remove_stale_temps(self, files: Sequence[FileRow]) -> None:
        """Remove the temporary files a killed run left for these files' outputs, listing each output
        folder once (not once per file); a folder that cannot be opened is left to each file's plan."""
        stems: dict[tuple[Path, Path], list[str]] = {}
        for f in files:
            with contextlib.suppress(PathRefused):
                _, _, base, out_rel = self._places(f)
                stems.setdefault((base, out_rel), []).append(Path(f.input).stem)
        for (base, out_rel), names in stems.items():
            with (
                contextlib.suppress(SamsemError, OSError),
                self.pins.folder(base, out_rel, create=False) as out,
            ):
                remove_stale_temps(out, names)

    def _write(
        self, job: _Job, f: FileRow, outputs: ImageOutputs, mask, report: dict, protect: Inputs
    ) -> list[str]:
        """Write a file's vector files, mask and report (last) into its confined output folder, never
        over ``protect`` (the job's inputs); returns the vector files' paths."""
        _, _, base, out_rel = self._places(f)
        with self.pins.folder(base, out_rel) as out:
            pinned = dataclasses.replace(
                outputs,
                mask=out / outputs.mask.name,
                report=out / outputs.report.name,
                vectors=tuple((fmt, out / p.name) for fmt, p in outputs.vectors),
            )
            write_outputs(pinned, mask, report, protect=protect, vector_options=job.vector)
        return [str(p) for _, p in outputs.vectors]

    def _run(self, job: _Job) -> None:
        from samsem.io import Inputs, read_image

        pipeline = job.pipeline
        assert pipeline is not None
        todo: dict[str, tuple[FileRow, ImageOutputs]] = {}

        def loader(f: FileRow):
            def load():
                job.ticket.check()
                self._set_file(job, f, pb.FILE_RUNNING)
                root, rel, _, _ = self._places(f)
                with self.pins.file(root, rel) as src:
                    return read_image(src)

            return load

        def progress(n: int) -> None:
            job.row.tiles_done += n
            self._changed(job)
            job.ticket.check()

        try:
            self._remove_stale_temps([f for f in job.row.files if f.state not in FINAL_FILE])
            for f in job.row.files:
                if f.state in FINAL_FILE:  # finished before a restart, or refused when listed
                    continue
                try:
                    outputs, height, width, finished = self._plan(job, f)
                except (SamsemError, OSError) as exc:
                    self._fail_file(job, f, exc)
                    continue
                if not job.row.overwrite and finished:
                    self._set_file(job, f, pb.FILE_SKIPPED, outputs=outputs)
                    continue
                todo[f.input] = (f, outputs)
                job.row.tiles_total += pipeline.count_inputs(height, width)
            self._changed(job)
            protect = Inputs(Path(x.input) for x in job.row.files)  # indexed once, not per output
            with self.engine.session(job.ticket):
                sources = [(name, loader(f)) for name, (f, _) in todo.items()]
                for result in pipeline.segment_many(sources, progress=progress):
                    f, outputs = todo[result.name]
                    if isinstance(result, FailedImage):
                        self._fail_file(job, f, result.error)
                        continue
                    try:
                        report = {**result.report.to_json(), "job": job.row.id}
                        vectors = self._write(job, f, outputs, result.mask, report, protect)
                    except (SamsemError, OSError) as exc:
                        self._fail_file(job, f, exc)
                        continue
                    self._set_file(job, f, pb.FILE_DONE, outputs=outputs, vectors=vectors)
        except Cancelled as exc:
            with self._lock:
                if exc.reason == SHUTDOWN and self.store.persistent:
                    self._halt(job, pb.JOB_QUEUED, "interrupted by a server shutdown; resumes at restart")
                else:
                    self._finish(job, pb.JOB_CANCELLED, exc.reason, pb.FILE_CANCELLED)
            self._changed(job)
            return
        except Exception as exc:  # out of space, model or other failure: the job fails, the worker goes on
            reason = str(exc) if isinstance(exc, _OutOfSpace) else f"{type(exc).__name__}: {exc}"
            with self._lock:
                self._halt(job, pb.JOB_FAILED, reason)
            self._changed(job)
            return
        with self._lock:
            ok = all(f.state in (pb.FILE_DONE, pb.FILE_SKIPPED) for f in job.row.files)
            self._finish(job, pb.JOB_SUCCEEDED if ok else pb.JOB_FAILED, "", pb.FILE_FAILED)
        self._changed(job)

    def _fail_file(self, job: _Job, f: FileRow, exc: BaseException) -> None:
        """Fail one file; out of space (a full disk, quota or file-size limit) also stops the job
        (:class:`_OutOfSpace`): the next files would fail the same way, so they stay pending."""
        code = _code(exc)
        reason = exc.strerror or str(exc) if isinstance(exc, OSError) else ""
        self._set_file(job, f, pb.FILE_FAILED, f"{clip(f.input)}: {reason}" if reason else str(exc), code)
        if isinstance(exc, PathRefused):
            self._note_refused(job, f)
        if code == "RESOURCE_EXHAUSTED":
            raise _OutOfSpace(
                f"stopped: out of space for the outputs of {clip(f.input)} ({reason}); the files not "
                "tried stay pending: free space and submit the job again (finished files are skipped)"
            )

    def _note_refused(self, job: _Job, f: FileRow) -> None:
        """Log and count a file refused by confinement."""
        log(logging.WARNING, "job path refused", job_id=job.row.id, input=f.input, reason=f.error)
        if self.on_refused is not None:
            self.on_refused()

    def _set_file(
        self,
        job: _Job,
        f: FileRow,
        state: int,
        error: str = "",
        code: str = "",
        outputs: ImageOutputs | None = None,
        vectors: list[str] | None = None,
    ) -> None:
        with self._lock:
            f.state, f.error, f.code = state, error, code
            if outputs is not None:
                f.mask_path, f.report_path = str(outputs.mask), str(outputs.report)
            if vectors is not None:
                f.vector_paths = vectors
            view = job.files_view
            if view is not None and 0 <= f.idx < len(view.files) and job.row.files[f.idx] is f:
                view.files[f.idx].CopyFrom(_file_status(f))  # one file, not the job's N
            else:
                job.files_view = None
            self._save(job, [f])
        self._changed(job)
        self._flush()

    def _halt(self, job: _Job, state: int, error: str) -> None:
        """Stop a job, its files not finished left pending (lock held): QUEUED (stopped by a shutdown)
        resumes at the next start; a final state ends it without marking untried files failed."""
        row = job.row
        row.state, row.error = state, error
        job.files_view = None
        if state in FINAL_JOB:
            row.finished = time.time()
        for f in row.files:
            if f.state == pb.FILE_RUNNING:
                f.state = pb.FILE_PENDING
        self._save(job)

    def _finish(self, job: _Job, state: int, error: str, open_files: int) -> None:
        """Final state (lock held); files not yet final get ``open_files``."""
        row = job.row
        row.state, row.error, row.finished = state, error, time.time()
        job.files_view = None
        for f in row.files:
            if f.state not in FINAL_FILE:
                f.state, f.error = open_files, error or f.error
        self._save(job)

    def _evict(self) -> None:
        """Forget the oldest finished jobs beyond ``max_kept`` (lock held; unsaved ones stay)."""
        finished = [k for k, j in self._jobs.items() if j.row.state in FINAL_JOB and k not in self._unsaved]
        gone = finished[: max(0, len(finished) - self.max_kept)]
        for k in gone:
            del self._jobs[k]
        try:
            self.store.delete(gone)
        except sqlite3.Error as exc:  # harmless: the next start evicts them again
            log(logging.WARNING, "job database kept evicted jobs", jobs=gone, error=str(exc))

    def _changed(self, job: _Job) -> None:
        """Publish a change: state counts to ``on_change``, a wake-up to the job's watchers (any thread)."""
        with self._lock:
            counts: dict[int, int] = {}
            for j in self._jobs.values():
                counts[j.row.state] = counts.get(j.row.state, 0) + 1
        if self.on_change is not None:
            self.on_change({pb.JobState.Name(s): counts.get(s, 0) for s in pb.JobState.values() if s})
        with contextlib.suppress(RuntimeError):  # a closed loop has no watchers left
            self.loop.call_soon_threadsafe(self._wake, job)

    @staticmethod
    def _wake(job: _Job) -> None:
        event, job.changed = job.changed, asyncio.Event()
        if event is not None:
            event.set()
        if job.row.state in FINAL_JOB:
            job.ended.set()

    @staticmethod
    def _snapshot(job: _Job, with_files: bool = True) -> pb.Job:
        """The job as a message (lock held); the file list is copied from ``files_view``, which file
        changes update one file at a time, so a snapshot per change stays cheap for large jobs."""
        row = job.row
        snap = pb.Job(
            job_id=row.id,
            state=pb.JobState.Name(row.state),
            tiles_done=row.tiles_done,
            tiles_total=row.tiles_total,
            created_unix=row.created,
            started_unix=row.started,
            finished_unix=row.finished,
            error=row.error,
            file_count=len(row.files),
        )
        if with_files:
            if job.files_view is None:
                job.files_view = pb.Job(files=[_file_status(f) for f in row.files])
            snap.files.MergeFrom(job.files_view.files)
        return snap


def _file_status(f: FileRow) -> pb.FileStatus:
    done = f.state in _HAS_OUTPUTS
    return pb.FileStatus(
        input=f.input,
        state=pb.FileState.Name(f.state),
        mask_path=f.mask_path if done else "",
        report_path=f.report_path if done else "",
        error=f.error,
        code=f.code,
        vector_paths=f.vector_paths if done else [],
    )
