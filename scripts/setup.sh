#!/usr/bin/env bash
# Install everything fast_cifar needs into .venv, on a fresh Debian or Ubuntu machine:
# the system libraries FFCV compiles against, torch, ffcv, and this package with its tests.
# Safe to run again: each step is skipped or quick when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_PACKAGES=${TORCH_PACKAGES:-"torch==2.14.1 torchvision==0.29.1"}

# 1. FFCV's C extension links libturbojpeg and OpenCV, found through pkg-config.
if ! pkg-config --exists libturbojpeg opencv4 2>/dev/null; then
    echo "== installing libturbojpeg0-dev libopencv-dev pkg-config (apt-get)"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libturbojpeg0-dev libopencv-dev pkg-config >/dev/null
fi

# 2. A virtual environment of our own.
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip

# 3. torch and numpy first: ffcv's build imports them, so it is built without isolation.
echo "== installing $TORCH_PACKAGES"
$PIP install -q $TORCH_PACKAGES numpy setuptools wheel
if ! .venv/bin/python -c "import ffcv.loader" 2>/dev/null; then
    echo "== building ffcv 1.0.2"
    $PIP install -q --no-build-isolation "ffcv==1.0.2"
fi

# 4. This package (editable) with fastargs, matplotlib, pytest...
$PIP install -q --no-build-isolation -e ".[test]"
echo "== set-up done: $(.venv/bin/python -c 'import torch, ffcv; print("torch", torch.__version__, "| CUDA available:", torch.cuda.is_available())')"
