#!/usr/bin/env bash
# The GPU suite in one command, on the GPU machine (its image has torch, numba, OpenCV, pynvml, but not
# sam2/hydra/omegaconf/iopath: carry .whl/, made here by benchmarks/gpu_wheels.sh).
#   bash benchmarks/gpu_suite.sh [OUT_DIR] [gpu_suite.py options...]        (OUT_DIR default: $OUT)
#   GPU_TESTS=1 bash benchmarks/gpu_suite.sh ...   also runs the gpu-marked tests first (about 2 minutes;
#                                                  pass --budget-s 360 to keep the whole call under 10)
# Installs the wheels into /tmp/site, makes samsem importable from this checkout without pip (a package
# tree of links in /tmp/samsem-src), then runs benchmarks/gpu_suite.py with its 8-minute budget. Writes
# OUT_DIR/results.md, results.json and log.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu_results}}"
shift || true
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed (run benchmarks/gpu_wheels.sh here and carry .whl)"; exit 1; }
src=/tmp/samsem-src
rm -rf "$src" && mkdir -p "$src/samsem"
cp -r samsem/. "$src/samsem/"
for part in runtime export train server; do ln -s "$PWD/$part" "$src/samsem/$part"; done
export PYTHONPATH="$src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm,utilization.gpu --format=csv | tee "$out/log.txt"
if [ "${GPU_TESTS:-0}" = 1 ]; then
    timeout 200 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_engines.py tests/test_backend_torch.py \
        2>&1 | tee "$out/gpu_tests.txt"
fi
python3 benchmarks/gpu_suite.py --out "$out" "$@" 2>&1 | tee -a "$out/log.txt"
