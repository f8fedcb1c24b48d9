"""`samsem review OUT`: the review queue, corrections and summary of a `samsem segment` output folder
from the command line, or (without an action) the review web page (samsem.server.review.web)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from samsem.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``review`` subcommand."""
    p = sub.add_parser(
        "review",
        help="inspect and correct a `samsem segment` output folder",
        description="Review the patches of a `samsem segment` output folder: flagged first, then the "
        "largest disagreement between the scales, then the lowest score. With an action (--list, "
        "--accept, --replace, --summary) do it and exit; without one, serve the review web page. "
        "Corrections keep the run's mask as NAME.mask.orig.* and every decision is appended to "
        "OUT/review.jsonl.",
    )
    p.add_argument("out", type=Path, metavar="OUT", help="the output folder of `samsem segment`")
    p.add_argument(
        "--images", type=Path, default=None, help="folder of the input images (default: each report's input)"
    )
    p.add_argument(
        "--alternative",
        action="append",
        default=[],
        metavar="SOURCE=DIR",
        help="masks a patch can be replaced by on the page, e.g. model1=DIR with DIR a `samsem segment "
        "--single-scale 1` output (SOURCE: model1, model2 or fallback; repeatable)",
    )
    act = p.add_mutually_exclusive_group()
    act.add_argument("--list", action="store_true", help="print the queue: image patch source flagged ...")
    act.add_argument("--accept", metavar="IMAGE:PATCH", default=None, help="accept a patch as it is")
    act.add_argument(
        "--replace",
        metavar="IMAGE:PATCH=MASKFILE",
        default=None,
        help="replace a patch by the same box of MASKFILE (a mask of the image's size)",
    )
    act.add_argument("--summary", action="store_true", help="print what was reviewed (JSON)")
    net = p.add_argument_group("web page")
    net.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    net.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    net.add_argument("--token", default=None, help="access token, required off loopback")
    p.set_defaults(func=run)


def parse_patch(text: str) -> tuple[str, int]:
    """``IMAGE:PATCH`` -> (image stem, patch index); ConfigError when malformed."""
    stem, sep, index = text.rpartition(":")
    if not sep or not stem or not index.isdigit():
        raise ConfigError(f"expected IMAGE:PATCH (e.g. sem_medium:3), got {text!r}")
    return stem, int(index)


def parse_alternatives(pairs: list[str]) -> dict[str, Path]:
    """``SOURCE=DIR`` pairs -> {source: folder}; ConfigError on an unknown source or a missing folder."""
    from samsem.server.review.core import ALTERNATIVE_SOURCES

    found = {}
    for pair in pairs:
        source, sep, folder = pair.partition("=")
        if not sep or source not in ALTERNATIVE_SOURCES or not folder:
            raise ConfigError(
                f"--alternative expects SOURCE=DIR with SOURCE one of {', '.join(ALTERNATIVE_SOURCES)}, "
                f"got {pair!r}"
            )
        if not Path(folder).is_dir():
            raise ConfigError(f"--alternative {source}: {folder} is not a folder")
        found[source] = Path(folder)
    return found


def run(args: argparse.Namespace) -> int:
    """Do the action asked for, or serve the page."""
    from samsem.server.review import core

    out: Path = args.out
    if not out.is_dir():
        raise ConfigError(f"{out}: not a folder (expected a `samsem segment` output folder)")
    alternatives = parse_alternatives(args.alternative)
    if args.list:
        for q in core.queue(out):
            score = "-" if q.score is None else f"{q.score:.3f}"
            flag = "flagged" if q.flagged else "-"
            print(f"{q.image}\t{q.index}\t{q.source}\t{flag}\t{q.disagreement:.3f}\t{score}")
        return 0
    if args.accept is not None:
        stem, index = parse_patch(args.accept)
        print(json.dumps(core.accept(out, stem, index)))
        return 0
    if args.replace is not None:
        target, sep, mask_file = args.replace.partition("=")
        if not sep or not mask_file:
            raise ConfigError(f"--replace expects IMAGE:PATCH=MASKFILE, got {args.replace!r}")
        stem, index = parse_patch(target)
        print(json.dumps(core.replace_from(out, stem, index, Path(mask_file))))
        return 0
    if args.summary:
        print(json.dumps(core.summary(out)))
        return 0
    from samsem.server.review.web import serve

    return serve(out, args.images, alternatives, host=args.host, port=args.port, token=args.token)
