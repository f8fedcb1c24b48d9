#!/usr/bin/env bash
# Install samsem and everything its tests need into the active Python environment (a venv is best).
# torch/torchvision are pinned to the releases this workplace serves from local disk; sam2 is built
# from source as pure Python (no CUDA extension), without build isolation so it uses this torch.
set -euo pipefail
cd "$(dirname "$0")"
python -m pip install --quiet --upgrade pip setuptools wheel
python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
SAM2_BUILD_CUDA=0 python -m pip install --quiet --no-build-isolation "sam2==1.1.0"
python -m pip install --quiet -e ".[train,onnx,server,vector,dist,test]"
# the viewer of `samsem review`'s page: OpenSeadragon from npm at a pinned version, installed beside the
# environment (never copied into the repository); the page is served from there ($SAMSEM_WEB_DIR)
SAMSEM_WEB_DIR="${SAMSEM_WEB_DIR:-$(python -c 'import sys; print(sys.prefix)')/share/samsem-web}"
if command -v npm >/dev/null; then
    npm install --silent --no-audit --no-fund --prefix "$SAMSEM_WEB_DIR" openseadragon@5.0.1
else
    echo "install.sh: npm not found; samsem review needs: npm install --prefix \"$SAMSEM_WEB_DIR\" openseadragon@5.0.1" >&2
fi
