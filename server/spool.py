"""The spool: where encoded uploads (and vector files on their way out) wait on disk, with a budget.

Each server spools into its own folder ``samsem-spool-XXXX`` under the temporary directory (``--tmp-dir``,
default the system's), holding an ``flock`` on ``lock`` inside it while it runs. At start-up a server
removes every spool folder whose lock nobody holds: the spool of a server that crashed or was killed
(the kernel drops the lock with the process). Spooled bytes count against a disk budget: an upload
whose declared size could never fit is refused at its header (INVALID_ARGUMENT); otherwise it
reserves its bytes as they arrive (a slow upload holds only what it has sent) and is refused when the
budget is full (RESOURCE_EXHAUSTED: it can succeed later).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from samsem.errors import InputError
from samsem.server.admission import Busy

PREFIX = "samsem-spool-"
LOCK_NAME = "lock"
_UNLOCKED_GRACE_S = 60.0  # a spool folder without a lock file is another server starting up


def remove_stale(base: Path) -> list[Path]:
    """Remove the spool folders under ``base`` that no running server holds; returns them."""
    removed = []
    for folder in sorted(base.glob(f"{PREFIX}*")):
        if not folder.is_dir() or folder.is_symlink():
            continue
        try:
            fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                if time.time() - folder.stat().st_mtime > _UNLOCKED_GRACE_S:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(folder)
            continue
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live server's spool
        finally:
            os.close(fd)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


class Spool:
    """This server's spool folder and disk budget (``budget`` bytes; see the module docstring).

    ``retry_after`` gives the retry hint of a full spool.
    """

    def __init__(self, tmp_dir: str | Path | None, budget: int, retry_after: Callable[[], float]) -> None:
        base = Path(tmp_dir or tempfile.gettempdir())
        base.mkdir(parents=True, exist_ok=True)
        self.removed = remove_stale(base)
        self.dir = Path(tempfile.mkdtemp(prefix=PREFIX, dir=base))
        self._lock_fd = os.open(
            self.dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600
        )
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        self.budget = budget
        self.used = 0
        self._retry_after = retry_after
        self._mutex = threading.Lock()

    def fits(self, nbytes: int) -> None:
        """InputError when an upload of ``nbytes`` could never be spooled."""
        if nbytes > self.budget:
            raise InputError(
                None,
                f"an upload of {nbytes} bytes exceeds the server's spool budget of {self.budget} bytes",
            )

    def reserve(self, nbytes: int) -> None:
        """Count ``nbytes`` against the budget, or refuse: InputError (never fits), Busy (full now)."""
        self.fits(nbytes)
        with self._mutex:
            if self.used + nbytes > self.budget:
                raise Busy(
                    f"server busy: {self.used} of {self.budget} spool bytes in use, {nbytes} more needed",
                    self._retry_after(),
                )
            self.used += nbytes

    def add(self, nbytes: int) -> None:
        """Count ``nbytes`` already on disk (vector files on their way out) without refusing."""
        with self._mutex:
            self.used += nbytes

    def release(self, nbytes: int) -> None:
        with self._mutex:
            self.used -= nbytes

    @contextlib.contextmanager
    def folder(self) -> Iterator[Path]:
        """A fresh folder inside the spool, removed after the block."""
        path = Path(tempfile.mkdtemp(dir=self.dir))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def close(self) -> None:
        """Remove the spool folder and drop its lock."""
        shutil.rmtree(self.dir, ignore_errors=True)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
