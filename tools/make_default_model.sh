#!/usr/bin/env bash
# Reproduce the bundled default model (samsem/data/default): synthetic training data from every preset
# plus SEM renderings of four real layouts (if ../shared/data is present), `samsem train --family lite`,
# then `samsem export` into the package. About an hour on a 2-core CPU. Usage:
#   tools/make_default_model.sh [WORK_DIR] [EPOCHS]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$repo/out/default-model}
epochs=${2:-6}
layouts=$repo/../shared/data/hy5syn-layouts
mkdir -p "$work"
cd "$work"
data=()
for p in easy medium hard extreme dense; do
  samsem synth --preset "$p" --count 24 --size 1024 --seed 11 --out "train/$p"
  data+=(--data "train/$p")
done
if [ -d "$layouts" ]; then
  mkdir -p layouts_train
  cp "$layouts"/label000[0-3].svg layouts_train/   # label0004 is held out for testing
  samsem synth --preset medium --count 16 --size 1024 --seed 12 --layouts layouts_train --out train/real_medium
  samsem synth --preset hard --count 16 --size 1024 --seed 13 --layouts layouts_train --out train/real_hard
  data+=(--data train/real_medium --data train/real_hard)
fi
samsem train --family lite "${data[@]}" --out run --epochs "$epochs" --test-fraction 0 --val-fraction 0.1 \
  --device cpu --seed 0
samsem export --checkpoint run/best.pt --out "$repo/samsem/data/default" --formats onnx,torch --overwrite
