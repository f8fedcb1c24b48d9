#!/usr/bin/env bash
# Reproduce the bundled default model (samsem/data/default) on a CPU: every fixed preset plus SEM
# renderings of four real layouts, `samsem train --family lite` from scratch (6 epochs, about 45 min on
# 2 idle cores), then `samsem export` into the package. The fifth real layout (label0004) is never used:
# it is the held-out layout of tools/make_heldout_sets.py. Without ../shared/data the layout sets are
# skipped.
#
# --finetune adds the fine-tuning experiment of benchmarks/RESULTS.md and exports its result instead:
# the randomized preset (every named effect, line widths 2-60 px) on procedural and on four real
# layouts, the real-like preset and the fixed presets again, with the gap term against shorts
# (3 epochs, about 2 h on 2 cores). It was measured worse on most held-out sets and is not shipped.
# Usage: tools/make_default_model.sh [--finetune] [WORK_DIR]
set -euo pipefail
finetune=false
if [ "${1:-}" = "--finetune" ]; then
  finetune=true
  shift
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$repo/out/default-model}
layouts=$repo/../shared/data/hy5syn-layouts
mkdir -p "$work"
cd "$work"
have_layouts=false
if [ -d "$layouts" ]; then
  have_layouts=true
  mkdir -p layouts_train
  cp "$layouts"/label000[0-3].svg layouts_train/
fi
S="samsem synth --size 1024"

data1=()
for p in easy medium hard extreme dense; do
  $S --preset "$p" --count 24 --seed 11 --out "stage1/$p"
  data1+=(--data "stage1/$p")
done
if $have_layouts; then
  $S --preset medium --count 16 --seed 12 --layouts layouts_train --out stage1/real_medium
  $S --preset hard --count 16 --seed 13 --layouts layouts_train --out stage1/real_hard
  data1+=(--data stage1/real_medium --data stage1/real_hard)
fi
samsem train --family lite "${data1[@]}" --out run1 --epochs 6 --test-fraction 0 --val-fraction 0.1 \
  --device cpu --seed 0

if ! $finetune; then
  samsem export --checkpoint run1/best.pt --out "$repo/samsem/data/default" --formats onnx,torch --overwrite
  exit 0
fi

# ---- fine-tuning experiment (--finetune)
$S --preset random --count 200 --seed 21 --out stage2/random
data2=(--data stage2/random)
if $have_layouts; then
  $S --preset random --count 100 --seed 22 --layouts layouts_train --out stage2/random_layouts
  $S --preset real-like --count 60 --seed 23 --layouts layouts_train --out stage2/reallike_layouts
  data2+=(--data stage2/random_layouts --data stage2/reallike_layouts)
fi
$S --preset real-like --count 30 --seed 24 --out stage2/reallike
$S --preset medium --count 15 --seed 25 --out stage2/medium
$S --preset hard --count 15 --seed 26 --out stage2/hard
$S --preset dense --count 15 --seed 27 --out stage2/dense
data2+=(--data stage2/reallike --data stage2/medium --data stage2/hard --data stage2/dense)
samsem train --family lite --checkpoint run1/best.pt "${data2[@]}" --out run2 --epochs 3 --lr 5e-4 \
  --gap-weight 1.0 --test-fraction 0 --val-fraction 0.05 --device cpu --seed 0

samsem export --checkpoint run2/best.pt --out "$repo/samsem/data/default" --formats onnx,torch --overwrite
