"""The single `samsem` command line: one parser over per-stage subcommand modules.

Each subcommand is registered by a function ``register(subparsers) -> None`` of its stage, which adds
its parser and sets ``func=<callable(args) -> int>``; modules import their heavy dependencies inside
that callable so that ``samsem --help`` stays fast.

Interruption: Ctrl-C (SIGINT) and SIGTERM both stop a command through ``KeyboardInterrupt`` in the
main thread, so the same clean-up runs (temporary files removed, finished outputs kept); the exit
code is 130 after SIGINT and 143 after SIGTERM (128 + the signal number, as shells report them).

stderr: messages that C libraries print themselves (libpng's "libpng warning: ..." and "libpng
error: ...", which OpenCV's PNG decoder lets through) are filtered out of the process's stderr; samsem
reports every unreadable file in its own words.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence

from samsem import __version__
from samsem.errors import EngineError, SamsemError

# subcommand name -> "module:function" that registers it (keep alphabetical)
COMMANDS: dict[str, str] = {
    "client": "samsem.server.client_cli:register",
    "evaluate": "samsem.runtime.cli:register_evaluate",
    "export": "samsem.export.cli:register",
    "review": "samsem.server.review.cli:register",
    "segment": "samsem.runtime.cli:register_segment",
    "serve": "samsem.server.serve_cli:register",
    "synth": "samsem.synth.cli:register",
    "train": "samsem.train.cli:register",
    "tune": "samsem.train.tune:register",
}


NATIVE_NOISE = (b"libpng warning:", b"libpng error:")  # lines dropped from the native stderr


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def _forward(source: int, target: int, drop: tuple[bytes, ...]) -> None:
    """Copy lines from pipe ``source`` to ``target`` until EOF, leaving out lines starting with ``drop``."""
    pending = b""
    with open(source, "rb", buffering=0) as pipe:
        while chunk := pipe.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            out = b"".join(line + b"\n" for line in lines if not line.startswith(drop))
            if out:
                with contextlib.suppress(OSError):
                    os.write(target, out)
    if pending and not pending.startswith(drop):
        with contextlib.suppress(OSError):
            os.write(target, pending)


@contextlib.contextmanager
def filtered_native_stderr(drop: tuple[bytes, ...] = NATIVE_NOISE) -> Iterator[None]:
    """Route file descriptor 2 through a thread that drops lines starting with ``drop``. When
    ``sys.stderr`` writes to descriptor 2 it is pointed at the original stream meanwhile (so terminal
    detection and progress bars work as before); any other ``sys.stderr`` is left alone."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable stderr: nothing to filter
        yield
        return
    try:
        rebind = sys.stderr.fileno() == 2
    except (AttributeError, ValueError, io.UnsupportedOperation):
        rebind = False
    read_end, write_end = os.pipe()
    original = sys.stderr
    os.dup2(write_end, 2)
    os.close(write_end)
    thread = threading.Thread(target=_forward, args=(read_end, saved, drop), daemon=True)
    thread.start()
    if rebind:
        sys.stderr = io.TextIOWrapper(
            io.FileIO(saved, "w", closefd=False),
            encoding=getattr(original, "encoding", None) or "utf-8",
            errors="backslashreplace",
            line_buffering=True,
        )
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        sys.stderr = original
        os.dup2(saved, 2)  # closes the pipe's last writer (unless a child process still holds it)
        thread.join(timeout=1.0)
        if not thread.is_alive():
            os.close(saved)


DESCRIPTION = """\
samsem segments metal lines in SEM images of delayered ICs (SAM2 or the bundled lite model, two-scale
pipeline) and measures masks electrically (ESD: opens, shorts, false positives and negatives per line)."""
EPILOG = """\
examples:
  samsem segment examples/images -o out --preview     segment with the bundled model
  samsem evaluate --pred out --gt examples/masks -o report
  samsem COMMAND --help                               every option of a command, with its default

exit codes: 0 ok, 1 some images or the engine failed, 2 usage or input error."""


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every registered subcommand."""
    return _build()[0]


def _build() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = argparse.ArgumentParser(
        prog="samsem",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"samsem {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for target in COMMANDS.values():
        module, _, function = target.partition(":")
        getattr(importlib.import_module(module), function)(sub)
    return parser, sub


def _parse(
    parser: argparse.ArgumentParser, sub: argparse._SubParsersAction, argv: list[str]
) -> argparse.Namespace:
    """Parse ``argv``; an unknown flag is reported with the usage of the subcommand it was given to
    (argparse alone would print the top-level usage)."""
    args, extra = parser.parse_known_args(argv)
    command = getattr(args, "command", None)
    if extra and command is not None and command in argv:
        sub.choices[command].parse_args(argv[argv.index(command) + 1 :])  # exits with its usage
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``samsem`` script; returns the process exit code."""
    parser, sub = _build()
    args = _parse(parser, sub, list(sys.argv[1:] if argv is None else argv))
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main else None
    try:
        with filtered_native_stderr():
            return int(args.func(args) or 0)
    except EngineError as exc:  # a fault of the model engine, not of the user's input
        print(f"samsem {args.command}: engine error: {exc}", file=sys.stderr)
        return 1
    except SamsemError as exc:
        print(f"samsem {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        what = "terminated (SIGTERM)" if terminated else "interrupted"
        print(f"samsem {args.command}: {what}; finished outputs are kept, rerun to resume", file=sys.stderr)
        return 143 if terminated else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
