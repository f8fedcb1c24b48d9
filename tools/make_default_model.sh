#!/usr/bin/env bash
# Reproduce the bundled default model (samsem/data/default) on a CPU, in two stages.
#
# Stage 1 (the default before 2026-12-08; about 45 min on 2 idle cores): every fixed preset plus SEM renderings of
# four real layouts, `samsem train --family lite` from scratch (whole images and patches, 6 epochs).
# Stage 2 (--crops, what ships since 2026-12-08: about 4-11 min per epoch on 2 cores, 4 epochs): a pool of 670 generated 1024² images (the
# randomized preset on procedural and four real layouts, its sparse variant for hard negatives, the
# real-like preset, the fixed presets), `samsem train --sampler crops` from stage 1's weights: random
# 512-px crops (downscale 1/2, 15 % centred on empty dielectric), flattened and mapped like the
# runtime's inputs (inverted images as --metal dark), BCE + Dice; every epoch's weights are
# kept in run2/epochs/ for tools/learning_curve.py. The fifth real layout (label0004) is never used: it
# is the held-out layout of tools/make_heldout_sets.py. Without ../shared/data the layout sets are
# skipped.
# Usage: tools/make_default_model.sh [--crops] [WORK_DIR]
set -euo pipefail
crops=false
if [ "${1:-}" = "--crops" ]; then
  crops=true
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

if ! $crops; then
  samsem export --checkpoint run1/best.pt --out "$repo/samsem/data/default" --formats onnx,torch --overwrite
  exit 0
fi

# ---- stage 2: random crops of a generated pool
data2=()
pool() { $S "$@"; data2+=(--data "${@: -1}"); }
pool --preset random --count 300 --seed 31 --out pool/random
pool --preset random-sparse --count 60 --seed 32 --out pool/sparse
for p in easy medium hard; do pool --preset "$p" --count 20 --seed 36 --out "pool/$p"; done
for p in dense extreme; do pool --preset "$p" --count 20 --seed 38 --out "pool/$p"; done
pool --preset real-like --count 30 --seed 35 --out pool/reallike
if $have_layouts; then
  pool --preset random --count 120 --seed 33 --layouts layouts_train --out pool/random_layouts
  pool --preset random-sparse --count 20 --seed 37 --layouts layouts_train --out pool/sparse_layouts
  pool --preset real-like --count 40 --seed 34 --layouts layouts_train --out pool/reallike_layouts
fi
samsem train --family lite --checkpoint run1/best.pt "${data2[@]}" --out run2 --sampler crops \
  --crop-size 512 --crops-per-epoch 1000 --batch-size 4 --epochs 4 --lr 5e-4 --warmup-steps 50 \
  --flatten 128 --gap-weight 0 --negative-fraction 0.15 --val-fraction 0.03 --test-fraction 0 \
  --device cpu --seed 0 --keep-checkpoints --no-progress

samsem export --checkpoint run2/best.pt --out "$repo/samsem/data/default" --formats onnx,torch --overwrite
