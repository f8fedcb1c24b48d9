"""Job state in SQLite (stdlib ``sqlite3``, WAL mode), so that jobs survive a server crash or restart.

One row per job and one per file of a job. The job manager writes through this store on every state
change (a job queued, started or finished, a file started or finished), each change one committed
transaction; ``synchronous=NORMAL`` in WAL mode keeps every committed change across a crash of the
process (kill -9), though not necessarily across a power loss. Progress counters are written with
file changes only.

A damaged row (text in a numeric column, JSON that does not parse) never stops the loading: the job
comes back with the columns that could be read, defaults for the others and ``JobRow.damaged`` naming
what was wrong (the job manager lists it as failed); every intact job loads as stored.

``JobStore(None)`` keeps the tables in memory (nothing survives the process). A database file is
used by one server at a time: a lock file beside it (``PATH.lock``, ``flock``) refuses a second
server, whose resuming the same jobs would write the same outputs twice.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samsem.errors import ConfigError

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    state INTEGER NOT NULL,
    options TEXT NOT NULL,
    overwrite INTEGER NOT NULL,
    vector TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL NOT NULL,
    finished REAL NOT NULL,
    error TEXT NOT NULL,
    tiles_done INTEGER NOT NULL,
    tiles_total INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    input TEXT NOT NULL,
    root TEXT NOT NULL,
    out_rel TEXT NOT NULL,
    state INTEGER NOT NULL,
    error TEXT NOT NULL,
    code TEXT NOT NULL,
    mask_path TEXT NOT NULL,
    report_path TEXT NOT NULL,
    vector_paths TEXT NOT NULL,
    PRIMARY KEY (job_id, idx)
);
"""
_JOB_COLUMNS = (
    "id",
    "seq",
    "state",
    "options",
    "overwrite",
    "vector",
    "created",
    "started",
    "finished",
    "error",
    "tiles_done",
    "tiles_total",
)
_FILE_COLUMNS = (
    "job_id",
    "idx",
    "input",
    "root",
    "out_rel",
    "state",
    "error",
    "code",
    "mask_path",
    "report_path",
    "vector_paths",
)


class _Bad(ValueError):
    """A stored value that does not fit its column."""


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise _Bad("not text")
    return value


def _integer(value: object) -> int:
    if type(value) is not int:
        raise _Bad("not an integer")
    return value


def _count(value: object) -> int:
    number = _integer(value)
    if number < 0:
        raise _Bad("negative")
    return number


def _flag(value: object) -> bool:
    return bool(_integer(value))


def _number(value: object) -> float:
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise _Bad("not a finite number")
    return float(value)


def _json(value: object) -> object:
    try:
        return json.loads(_text(value))
    except json.JSONDecodeError as exc:
        raise _Bad(f"not JSON ({exc.msg})") from None


def _options(value: object) -> dict[str, str]:
    found = _json(value)
    if not isinstance(found, dict) or not all(isinstance(v, str) for v in found.values()):
        raise _Bad("not a JSON object of strings")
    return found


def _object(value: object) -> dict[str, Any]:
    found = _json(value)
    if not isinstance(found, dict):
        raise _Bad("not a JSON object")
    return found


def _paths(value: object) -> list[str]:
    found = _json(value)
    if not isinstance(found, list) or not all(isinstance(v, str) for v in found):
        raise _Bad("not a JSON list of strings")
    return found


# per column: how a stored value is read, and what a damaged one is read as
_Column = tuple[Callable[[object], Any], Callable[[object], Any]]
_TEXT: _Column = (_text, str)
_JOB_READ: dict[str, _Column] = {
    "id": _TEXT,
    "seq": (_integer, lambda _: 0),
    "state": (_integer, lambda _: 0),  # 0: no state (the manager fails the job)
    "options": (_options, lambda _: {}),
    "overwrite": (_flag, lambda _: False),
    "vector": (_object, lambda _: {}),
    "created": (_number, lambda _: 0.0),
    "started": (_number, lambda _: 0.0),
    "finished": (_number, lambda _: 0.0),
    "error": _TEXT,
    "tiles_done": (_count, lambda _: 0),
    "tiles_total": (_count, lambda _: 0),
}
_FILE_READ: dict[str, _Column] = {
    "job_id": _TEXT,
    "idx": (_count, lambda _: -1),  # -1: matches no stored file, so a write never lands on another
    "input": _TEXT,
    "root": _TEXT,
    "out_rel": _TEXT,
    "state": (_integer, lambda _: 0),
    "error": _TEXT,
    "code": _TEXT,
    "mask_path": _TEXT,
    "report_path": _TEXT,
    "vector_paths": (_paths, lambda _: []),
}


def _read(table: str, columns: dict[str, _Column], row: tuple) -> tuple[dict[str, Any], list[str]]:
    """A row's values by column name, and what was wrong with the damaged ones."""
    values, damage = {}, []
    for (name, (read, fallback)), value in zip(columns.items(), row, strict=True):
        try:
            values[name] = read(value)
        except _Bad as exc:
            values[name] = fallback(value)
            shown = repr(value)
            damage.append(f"{table}.{name} = {shown[:40]}{'...' if len(shown) > 40 else ''}: {exc}")
    return values, damage


@dataclass
class FileRow:
    """One file of a job as stored (paths as strings; ``vector_paths`` a list)."""

    idx: int
    input: str
    root: str
    out_rel: str
    state: int
    error: str = ""
    code: str = ""
    mask_path: str = ""
    report_path: str = ""
    vector_paths: list[str] = field(default_factory=list)


@dataclass
class JobRow:
    """One job as stored (``options`` and ``vector`` as dicts, ``vector`` empty when none);
    ``damaged``: what was wrong with its stored rows (empty: nothing)."""

    id: str
    seq: int
    state: int
    options: dict[str, str]
    overwrite: bool
    vector: dict[str, Any]
    created: float
    started: float = 0.0
    finished: float = 0.0
    error: str = ""
    tiles_done: int = 0
    tiles_total: int = 0
    files: list[FileRow] = field(default_factory=list)
    damaged: str = ""


def default_path() -> Path:
    """Where ``samsem serve`` keeps its jobs by default: ``$XDG_STATE_HOME/samsem/jobs.sqlite``
    (``~/.local/state/samsem/jobs.sqlite`` when the variable is unset)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "samsem" / "jobs.sqlite"


class JobStore:
    """The job tables; thread-safe (one connection behind a lock). ``path`` None: in memory."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = None if path is None else Path(path)
        self._lock = threading.Lock()
        self._lock_fd: int | None = None
        if self.path is not None:
            self._take_lock(self.path)
        try:
            self._db = sqlite3.connect(
                ":memory:" if self.path is None else str(self.path),
                check_same_thread=False,
                isolation_level=None,  # autocommit; transactions are explicit
            )
            if self.path is not None:
                mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise ConfigError(f"job database {self.path}: cannot use WAL mode (got {mode})")
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    f"job database {self.path} has schema version {version}, newer than this samsem's "
                    f"({SCHEMA_VERSION})"
                )
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            self._release_lock()
            raise ConfigError(f"job database {self.path}: {exc}") from None
        except BaseException:
            self._release_lock()
            raise

    @property
    def persistent(self) -> bool:
        return self.path is not None

    def _take_lock(self, path: Path) -> None:
        import fcntl

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot open the job database {path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigError(
                f"job database {path} is in use by another server (give each server its own --job-db)"
            ) from None
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction; on any error (a failed COMMIT included: disk full, read-only database) it is
        rolled back, so that the connection takes the next one once the database is writable again."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):  # the first error is the one to report
                        self._db.execute("ROLLBACK")
                raise

    # ------------------------------------------------------------------ writes
    def insert(self, job: JobRow) -> None:
        """Store a new job and its files."""
        with self._tx() as db:
            db.execute(
                f"INSERT INTO jobs ({', '.join(_JOB_COLUMNS)}) VALUES ({', '.join('?' * len(_JOB_COLUMNS))})",
                _job_values(job),
            )
            db.executemany(
                f"INSERT INTO files ({', '.join(_FILE_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(_FILE_COLUMNS))})",
                [_file_values(job.id, f) for f in job.files],
            )

    def update(self, job: JobRow, files: list[FileRow] | None = None) -> None:
        """Write the job's state (and the given files' states) in one transaction."""
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET state=?, started=?, finished=?, error=?, tiles_done=?, tiles_total=? "
                "WHERE id=?",
                (job.state, job.started, job.finished, job.error, job.tiles_done, job.tiles_total, job.id),
            )
            for f in files if files is not None else job.files:
                db.execute(
                    "UPDATE files SET state=?, error=?, code=?, mask_path=?, report_path=?, vector_paths=? "
                    "WHERE job_id=? AND idx=?",
                    (
                        f.state,
                        f.error,
                        f.code,
                        f.mask_path,
                        f.report_path,
                        json.dumps(f.vector_paths),
                        job.id,
                        f.idx,
                    ),
                )

    def delete(self, job_ids: list[str]) -> None:
        """Forget jobs (and their files)."""
        if job_ids:
            with self._tx() as db:
                db.executemany("DELETE FROM jobs WHERE id=?", [(j,) for j in job_ids])

    # ------------------------------------------------------------------ reads
    def load(self) -> list[JobRow]:
        """Every stored job with its files, oldest first; damaged rows as the module says (ConfigError:
        the database cannot be read at all)."""
        jobs: dict[str, JobRow] = {}
        with self._lock, self._readable():
            for row in self._db.execute(f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs ORDER BY seq"):
                values, damage = _read("jobs", _JOB_READ, row)
                jobs[values["id"]] = JobRow(**values, damaged="; ".join(damage))
            for row in self._db.execute(f"SELECT {', '.join(_FILE_COLUMNS)} FROM files ORDER BY job_id, idx"):
                values, damage = _read("files", _FILE_READ, row)
                job = jobs.get(values.pop("job_id"))
                if job is None:
                    continue
                job.files.append(FileRow(**values))
                damage = [f"file {values['input']}: {d}" for d in damage]
                job.damaged = "; ".join(filter(None, [job.damaged, *damage]))
        return list(jobs.values())

    def next_seq(self) -> int:
        """A sequence number after every stored job's (damaged ones aside)."""
        with self._lock, self._readable():
            (top,) = self._db.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM jobs WHERE typeof(seq) = 'integer'"
            ).fetchone()
        return int(top) + 1

    @contextlib.contextmanager
    def _readable(self) -> Iterator[None]:
        """sqlite errors of a read as ConfigError (the database file itself is damaged)."""
        try:
            yield
        except sqlite3.Error as exc:
            raise ConfigError(f"job database {self.path}: cannot be read ({exc})") from None

    def close(self) -> None:
        """Close the database and release its lock."""
        with self._lock:
            self._db.close()
        self._release_lock()


def _job_values(job: JobRow) -> tuple:
    return (
        job.id,
        job.seq,
        job.state,
        json.dumps(job.options, sort_keys=True),
        int(job.overwrite),
        json.dumps(job.vector, sort_keys=True),
        job.created,
        job.started,
        job.finished,
        job.error,
        job.tiles_done,
        job.tiles_total,
    )


def _file_values(job_id: str, f: FileRow) -> tuple:
    return (
        job_id,
        f.idx,
        f.input,
        f.root,
        f.out_rel,
        f.state,
        f.error,
        f.code,
        f.mask_path,
        f.report_path,
        json.dumps(f.vector_paths),
    )
