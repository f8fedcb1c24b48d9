"""The single `samsem` command line: a thin dispatcher over per-stage subcommand modules.

Each subcommand is registered by a function ``register(subparsers) -> None`` of its stage, which adds
its parser and sets ``func=<callable(args) -> int>``; modules import their heavy dependencies inside
that callable so that ``samsem --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from samsem import __version__
from samsem.errors import EngineError, SamsemError

# subcommand name -> "module:function" that registers it (keep alphabetical)
COMMANDS: dict[str, str] = {
    "client": "samsem.server.client_cli:register",
    "evaluate": "samsem.runtime.cli:register_evaluate",
    "export": "samsem.export.cli:register",
    "segment": "samsem.runtime.cli:register_segment",
    "serve": "samsem.server.serve_cli:register",
    "synth": "samsem.synth.cli:register",
    "train": "samsem.train.cli:register",
    "tune": "samsem.train.tune:register",
}


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="samsem", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"samsem {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for target in COMMANDS.values():
        module, _, function = target.partition(":")
        getattr(importlib.import_module(module), function)(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``samsem`` script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except EngineError as exc:  # a fault of the model engine, not of the user's input
        print(f"samsem {args.command}: engine error: {exc}", file=sys.stderr)
        return 1
    except SamsemError as exc:
        print(f"samsem {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        msg = "interrupted; finished outputs are kept, rerun to resume"
        print(f"samsem {args.command}: {msg}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
