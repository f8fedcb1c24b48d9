"""`samsem synth`: write a synthetic SEM data set (images, exact masks, manifest)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `synth` subcommand."""
    p = subparsers.add_parser(
        "synth",
        help="generate synthetic SEM images with exact metal masks",
        description="Generate synthetic SEM images of delayered metal layers with exact ground-truth masks: "
        "DIR/images/NAME.png, DIR/masks/NAME.png (.tif above 8192 px) and DIR/manifest.json. "
        "Deterministic for a seed; rerunning resumes (finished images are skipped). "
        "--preset random samples every named effect per image; --effects/--exclude-effects force effects "
        "on/off (see --list-effects and docs/synth.md).",
    )
    p.add_argument("--out", metavar="DIR", help="output directory (required unless --list-presets)")
    p.add_argument("--preset", default="medium", help="synthesis preset (see --list-presets; default medium)")
    p.add_argument("--count", type=int, default=1, help="number of images (default 1)")
    p.add_argument("--size", type=int, default=1024, help="image height and width in px (default 1024)")
    p.add_argument("--height", type=int, help="image height in px (overrides --size)")
    p.add_argument("--width", type=int, help="image width in px (overrides --size)")
    p.add_argument(
        "--seed", type=int, default=0, help="base seed; image i uses a seed derived from it (default 0)"
    )
    p.add_argument("--bit-depth", type=int, choices=(8, 16), default=8, help="output bit depth (default 8)")
    p.add_argument(
        "--layouts",
        nargs="+",
        metavar="SVG",
        help="SVG layout files or directories to crop masks from instead of procedural layouts",
    )
    p.add_argument(
        "--effects",
        metavar="A,B",
        help="force these named effects on in every image (e.g. a test set of one condition)",
    )
    p.add_argument(
        "--exclude-effects",
        metavar="A,B",
        help="switch these named effects off in every image (e.g. leave-one-effect-out training data)",
    )
    p.add_argument("--list-presets", action="store_true", help="print the presets and exit")
    p.add_argument("--list-effects", action="store_true", help="print the named effects and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate the data set described by `args`; return the exit code."""
    from samsem.errors import ConfigError
    from samsem.synth.effects import EffectSelection, effect_names, get_effect, parse_effects
    from samsem.synth.generate import generate_dataset
    from samsem.synth.presets import get_preset, preset_names

    if args.list_presets:
        for name in preset_names():
            print(f"{name:10s} {get_preset(name).description}")
        return 0
    if args.list_effects:
        for name in effect_names():
            effect = get_effect(name)
            print(f"{name:17s} p={effect.prob:.2f}  {effect.description}")
        return 0
    effects = EffectSelection(force=parse_effects(args.effects), exclude=parse_effects(args.exclude_effects))
    if args.out is None:
        raise ConfigError("--out DIR is required")
    height = args.height if args.height is not None else args.size
    width = args.width if args.width is not None else args.size
    summary = generate_dataset(
        args.out,
        args.preset,
        args.count,
        height,
        width,
        seed=args.seed,
        bit_depth=args.bit_depth,
        layouts=args.layouts or (),
        effects=effects,
    )
    print(
        f"samsem synth: wrote {len(summary.written)} image(s), skipped {len(summary.skipped)} "
        f"already finished, in {summary.out}"
    )
    return 0
