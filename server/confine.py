"""Confinement of server-side file access to configured roots, checked whenever a file is opened.

A job path is resolved and checked against the job roots when the job is submitted, and again each
time the server opens it or creates an output: the folder is reached by walking down from the
root's descriptor one component at a time with ``O_NOFOLLOW`` (an ``openat`` walk), so a symlink or a
folder swapped for one anywhere below a root is refused with :class:`PathRefused`, never followed.
The file or folder is then used through its open descriptor (``/proc/self/fd/N``, Linux), so what is
read or written is the very file or folder that passed the check, whatever is renamed meanwhile.
Where ``/proc/self/fd`` is missing, the walk still checks each path just before it is used.

The roots themselves are trusted configuration (resolved once at start-up): only what lies below
them is walked without following links.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from samsem.errors import InputError, SamsemError

MAX_PATH_BYTES = 4096  # PATH_MAX on Linux: longer job paths are refused before any file call
ECHO_CHARS = 200  # user input echoed in an error message is clipped to this many characters
_PROC_FD = Path("/proc/self/fd")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_REFUSED = (errno.ELOOP, errno.ENOTDIR, errno.EMLINK)


class PathRefused(SamsemError):
    """A path outside the server's roots, or one that leaves them through a link (PERMISSION_DENIED)."""


def clip(text: str, limit: int = ECHO_CHARS) -> str:
    """``text`` cut to ``limit`` characters (with a note of the full length): safe to echo back."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def check_path_text(path: str) -> Path:
    """An absolute job path as given, or InputError (NUL byte, too long, relative)."""
    if "\x00" in path:
        raise InputError(None, f"job path {clip(path)!r} contains a NUL byte", "a file system path")
    if len(path.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise InputError(None, f"job path {clip(path)!r} is longer than {MAX_PATH_BYTES} bytes")
    p = Path(path)
    if not p.is_absolute():
        raise InputError(
            None, f"{clip(path)}: job paths must be absolute", "an absolute path under one of the roots"
        )
    return p


def confine(path: str, roots: Sequence[Path]) -> tuple[Path, Path]:
    """Resolve ``path`` (absolute, symlinks followed) and return (real path, the root containing it)."""
    p = check_path_text(path)
    try:
        real = Path(os.path.realpath(p))
    except (OSError, ValueError) as exc:
        raise InputError(None, f"{clip(path)}: cannot resolve the path ({exc})") from None
    for root in roots:
        if real == root or real.is_relative_to(root):
            return real, root
    raise PathRefused(f"{clip(path)}: outside the server's job roots; refused")


def _refused(root: Path, rel: Path, exc: OSError) -> PathRefused:
    return PathRefused(
        f"{clip(str(root / rel))}: leaves {root} through a link or a replaced folder "
        f"({exc.strerror or exc}); refused"
    )


def open_dir(root: Path, rel: Path, *, create: bool = False) -> int:
    """Descriptor of the folder ``root/rel``, reached without following any link below ``root``.

    create: make missing folders on the way. Raises PathRefused when a component is a link (or not a
    folder), InputError when a folder is missing and ``create`` is false.
    """
    if rel.is_absolute() or ".." in rel.parts:
        raise PathRefused(f"{clip(str(rel))}: not a path below {root}; refused")
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InputError(root, f"cannot open the root folder ({exc.strerror or exc})") from None
    try:
        for part in rel.parts:
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise InputError(root / rel, "folder not found") from None
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o777, dir_fd=fd)
                try:
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    raise _refused(root, rel, exc) from None
            except OSError as exc:
                if exc.errno in _REFUSED:
                    raise _refused(root, rel, exc) from None
                raise InputError(root / rel, f"cannot open folder ({exc.strerror or exc})") from None
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_file(root: Path, rel: Path) -> int:
    """Read-only descriptor of the regular file ``root/rel``, reached without following any link; a
    FIFO, device or socket is refused without blocking (:func:`samsem.io.regular_fd`)."""
    from samsem.io import regular_fd

    dfd = open_dir(root, rel.parent)
    try:
        return regular_fd(
            rel.name, root / rel, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), dfd
        )
    except FileNotFoundError:
        raise InputError(root / rel, "file not found") from None
    except OSError as exc:
        if exc.errno in _REFUSED:
            raise _refused(root, rel, exc) from None
        raise InputError(root / rel, f"cannot open file ({exc.strerror or exc})") from None
    finally:
        os.close(dfd)


class Pins:
    """Names for open descriptors: ``pin(fd, suffix)`` gives a path in a private folder that leads to
    exactly that file or folder (a link to ``/proc/self/fd/N``), usable by any path-taking function.
    An InputError or OSError raised while a pin is used names the checked path instead of the pin, so
    messages never show the server's private folder.

    Without ``/proc/self/fd`` the checked path itself is used (the check then precedes the use).
    ``parent``: where the private folder is made (default: the system's temporary directory).
    """

    def __init__(self, parent: Path | None = None) -> None:
        self.available = _PROC_FD.is_dir()
        self._dir = Path(tempfile.mkdtemp(prefix="pins-", dir=parent)) if self.available else None
        self._lock = threading.Lock()
        self._count = 0

    @contextlib.contextmanager
    def file(self, root: Path, rel: Path) -> Iterator[Path]:
        """A path to read ``root/rel`` through, checked now (PathRefused / InputError)."""
        fd = open_file(root, rel)
        with self._pinned(fd, rel.suffix, root / rel) as path:
            yield path

    @contextlib.contextmanager
    def folder(self, root: Path, rel: Path, *, create: bool = True) -> Iterator[Path]:
        """A path to create files in ``root/rel`` through (folders created on the way), checked now."""
        fd = open_dir(root, rel, create=create)
        with self._pinned(fd, "", root / rel) as path:
            yield path

    @contextlib.contextmanager
    def _pinned(self, fd: int, suffix: str, checked: Path) -> Iterator[Path]:
        try:
            if self._dir is None:
                yield checked
                return
            with self._lock:
                self._count += 1
                link = self._dir / f"{self._count}{suffix}"
            os.symlink(_PROC_FD / str(fd), link)
            try:
                yield link
            except InputError as exc:  # errors name the checked path, never the private pin
                if exc.path is None or not exc.path.is_relative_to(link):
                    raise
                raise InputError(checked / exc.path.relative_to(link), exc.reason, exc.expected) from None
            except OSError as exc:
                for attr in ("filename", "filename2"):
                    name = getattr(exc, attr)
                    if isinstance(name, str) and Path(name).is_relative_to(link):
                        setattr(exc, attr, str(checked / Path(name).relative_to(link)))
                raise
            finally:
                link.unlink(missing_ok=True)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Remove the private folder."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
