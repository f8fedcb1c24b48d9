#!/usr/bin/env python
"""Write held-out synthetic test sets that differ from training data in kind, one folder per condition.

Each set is a `samsem synth` folder (images/, masks/, manifest.json) under OUT:

* OUT/CONDITION-procedural: procedural layouts;
* OUT/CONDITION-label0004: crops of the held-out real layout label0004.svg (skipped, with a message,
  when ../shared/data/hy5syn-layouts is absent; no training recipe of this project uses label0004).

Conditions (preset, effects forced on; every other effect off unless noted):

  clean           random preset, all effects off (plain images at magnifications 0.45-6.5)
  noisy           noise + scan
  low-contrast    low-contrast + grain (background grain at a 1.3-1.7 contrast ratio)
  inverted        inverted (metal darker than the background)
  charging        charging + show-through (bright regions, the layer below nearly metal-bright)
  debris          dust + scratches + delayered (outline-only and patchy lines)
  real-like       the real-like preset (HY5SYN look; label0004 rendered at about 1/2.4)

Seeds: condition k uses base seed 1_000_000 + 1000 k (+ 500 for label0004); leave-one-out set of effect
number e uses 2_000_000 + 1000 e. Keep training base seeds below 1_000_000 (tools/make_default_model.sh
uses 11-13) and the sets stay disjoint: image i of a set uses SeedSequence(base, spawn_key=(i,)).

Leave-one-effect-out: `--leave-one-out E` also writes OUT/loo-E-procedural (and -label0004): the random
preset with E forced on and the other effects drawn as usual; train on
`samsem synth --preset random --exclude-effects E` (printed) and test there.

Deterministic; rerunning resumes. Small by default (8 images of 512 px per set). Usage:

    python tools/make_heldout_sets.py /work/data/heldout [--count 8] [--size 512] [--leave-one-out charging]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from samsem.errors import SamsemError
from samsem.io import write_json
from samsem.synth.effects import EffectSelection, effect_names, parse_effects
from samsem.synth.generate import generate_dataset

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LAYOUTS = REPO.parent / "shared" / "data" / "hy5syn-layouts"
HELD_OUT_LAYOUT = "label0004.svg"
HELDOUT_SEED = 1_000_000
LOO_SEED = 2_000_000
SVG_OFFSET = 500


@dataclass(frozen=True)
class Condition:
    """One held-out condition: a preset and the effects forced on (None: keep the preset's draw)."""

    name: str
    preset: str
    force: tuple[str, ...] | None
    description: str

    def selection(self) -> EffectSelection:
        if self.force is None:
            return EffectSelection()
        return EffectSelection(
            force=self.force, exclude=tuple(n for n in effect_names() if n not in self.force)
        )


CONDITIONS = (
    Condition("clean", "random", (), "all effects off"),
    Condition("noisy", "random", ("noise", "scan"), "low dose and scan artefacts"),
    Condition("low-contrast", "random", ("low-contrast", "grain"), "contrast ratio 1.3-1.7 with grain"),
    Condition("inverted", "random", ("inverted",), "metal darker than the background"),
    Condition("charging", "random", ("charging", "show-through"), "charging with the layer below showing"),
    Condition("debris", "random", ("dust", "scratches", "delayered"), "dust, scratches, delayered lines"),
    Condition("real-like", "real-like", None, "the real-like preset"),
)


def _write(out: Path, preset: str, selection: EffectSelection, seed: int, args, layout: Path | None) -> dict:
    summary = generate_dataset(
        out,
        preset,
        args.count,
        args.size,
        args.size,
        seed=seed,
        layouts=() if layout is None else (layout,),
        progress=False,
        effects=selection,
    )
    print(f"{out}: wrote {len(summary.written)}, kept {len(summary.skipped)}", flush=True)
    return {
        "folder": out.name,
        "preset": preset,
        "effects": list(selection.force),
        "exclude_effects": list(selection.exclude),
        "base_seed": seed,
        "layout": None if layout is None else layout.name,
        "count": args.count,
        "size": args.size,
    }


def main(argv: list[str] | None = None) -> int:
    """Write the held-out sets; return the exit code (2 for a usage error)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="output folder (outside the repository)")
    ap.add_argument("--count", type=int, default=8, help="images per set (default 8)")
    ap.add_argument("--size", type=int, default=512, help="image side in px (default 512)")
    names = ",".join(c.name for c in CONDITIONS)
    ap.add_argument("--conditions", default=names, help=f"comma-separated subset of {names}")
    ap.add_argument(
        "--leave-one-out", default="", metavar="E,F", help="also write loo-E sets for these effects"
    )
    ap.add_argument("--layouts", type=Path, default=DEFAULT_LAYOUTS, help="folder holding label0004.svg")
    args = ap.parse_args(argv)
    try:
        wanted = [c.strip() for c in args.conditions.split(",") if c.strip()]
        unknown = sorted(set(wanted) - {c.name for c in CONDITIONS})
        if unknown:
            print(
                f"make_heldout_sets: error: unknown condition(s) {', '.join(unknown)}; valid: {names}",
                file=sys.stderr,
            )
            return 2
        loo = parse_effects(args.leave_one_out)
        layout = args.layouts / HELD_OUT_LAYOUT
        if not layout.is_file():
            print(f"{layout} is absent: writing the procedural sets only")
            layout = None
        sets = []
        for k, cond in enumerate(CONDITIONS):
            if cond.name not in wanted:
                continue
            seed = HELDOUT_SEED + 1000 * k
            sets.append(
                _write(args.out / f"{cond.name}-procedural", cond.preset, cond.selection(), seed, args, None)
            )
            if layout is not None:
                folder = args.out / f"{cond.name}-label0004"
                sets.append(_write(folder, cond.preset, cond.selection(), seed + SVG_OFFSET, args, layout))
        for effect in loo:
            e = effect_names().index(effect)
            seed = LOO_SEED + 1000 * e
            selection = EffectSelection(force=(effect,))
            sets.append(_write(args.out / f"loo-{effect}-procedural", "random", selection, seed, args, None))
            if layout is not None:
                folder = args.out / f"loo-{effect}-label0004"
                sets.append(_write(folder, "random", selection, seed + SVG_OFFSET, args, layout))
            print(
                f"train for loo-{effect}: samsem synth --preset random --exclude-effects {effect} --out DIR"
            )
        index = args.out / "heldout.json"
        known = json.loads(index.read_text(encoding="utf-8"))["sets"] if index.is_file() else []
        merged = {s["folder"]: s for s in known} | {s["folder"]: s for s in sets}
        write_json(
            index,
            {
                "generator": "tools/make_heldout_sets.py",
                "sets": sorted(merged.values(), key=lambda s: s["folder"]),
            },
        )
    except SamsemError as exc:
        print(f"make_heldout_sets: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out / 'heldout.json'} ({len(sets)} sets)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
