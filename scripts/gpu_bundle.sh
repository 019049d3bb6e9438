#!/usr/bin/env bash
# Run HERE (no GPU needed): gather into .carry/ (ignored by git) what the GPU machine
# lacks, so that scripts/gpu_run.sh can do the whole GPU measurement in one call there.
# The GPU machine has Python 3.12, torch, numba, numpy, matplotlib, PyYAML, tqdm and
# opencv-python-headless, but no network, no ffcv and no libturbojpeg/OpenCV libraries.
#   bash scripts/gpu_bundle.sh [CIFAR-10 COPY]     (default: ../shared/datasets/cifar10-jpeg.tar.gz)
set -euo pipefail
cd "$(dirname "$0")/.."
PY312=${PY312:-/root/.pyenv/versions/3.12.1/bin/python}
DATA=${1:-../shared/datasets/cifar10-jpeg.tar.gz}

rm -rf .carry && mkdir -p .carry/wheels .carry/lib
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT

# 1. ffcv compiled for Python 3.12 against this machine's libraries, plus the pure-Python
#    packages the GPU machine lacks (ffcv itself needs none of its other declared ones to import).
"$PY312" -m venv "$build/venv"
"$build/venv/bin/pip" install -q setuptools wheel
"$build/venv/bin/pip" wheel -q --no-build-isolation --no-deps -w .carry/wheels \
    ffcv==1.0.2 fastargs==1.2.0 terminaltables==3.1.10

# 2. The shared libraries ffcv's extension links, minus glibc and the C++ runtime, which the
#    GPU machine has in newer versions (an older libstdc++ first on the path would break torch).
unzip -q -o .carry/wheels/ffcv-*.whl 'ffcv/_libffcv*' -d "$build"
ldd "$build"/ffcv/_libffcv*.so | awk '$3 ~ /^\// {print $3}' \
    | grep -Ev '/(libc|libm|libpthread|libdl|librt|libstdc\+\+|libgcc_s)\.so' \
    | while read -r library; do cp -L "$library" .carry/lib/; done

# 3. The data set, since ../shared does not travel.
cp "$DATA" .carry/
du -sh .carry .carry/* | sed 's/^/  /'
echo "== .carry ready: run scripts/gpu_run.sh on the GPU machine with carry=['.carry']"
