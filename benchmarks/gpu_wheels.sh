#!/usr/bin/env bash
# Run HERE (the development machine, which reaches the package registry) before the GPU session:
# puts into .whl/ the pure-Python wheels that the GPU machine's image lacks and samsem needs
# (sam2 built without its CUDA extension, hydra-core, omegaconf, antlr4 runtime, iopath).
# The GPU machine then installs them offline (benchmarks/gpu_suite.sh). .whl/ is git-ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
SAM2_BUILD_CUDA=0 python -m pip wheel --quiet --no-deps --no-build-isolation -w .whl \
    "sam2==1.1.0" "iopath==0.1.10" "antlr4-python3-runtime==4.9.3"
python -m pip download --quiet --no-deps --only-binary=:all: -d .whl "hydra-core==1.3.2" "omegaconf==2.3.0"
ls -l .whl
