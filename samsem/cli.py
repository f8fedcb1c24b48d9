"""The single `samsem` command line: one parser over per-stage subcommand modules.

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
