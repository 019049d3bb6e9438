#!/usr/bin/env bash
# For a GPU machine with no network: pack into gpu_bundle/ (ignored by git) what it lacks to train,
# so that scripts/gpu_run.sh can do the whole GPU measurement there in one go.
# Run on a machine that has this project set up (scripts/setup.sh) and a Python of the
# GPU machine's version. It packs ffcv built for that Python, the shared libraries it
# links, fastargs, terminaltables and airbench (a peer in benchmarks/peers.yaml), and a copy of CIFAR-10.
#   bash scripts/gpu_bundle.sh CIFAR10_COPY [PYTHON]
#     CIFAR10_COPY: an archive or folder write_datasets.py accepts (e.g. cifar10-jpeg.tar.gz)
#     PYTHON: the interpreter to build for (default: the first python3.12 on PATH)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: bash scripts/gpu_bundle.sh CIFAR10_COPY [PYTHON]}
TARGET_PYTHON=${2:-$(command -v python3.12 || true)}
[ -n "$TARGET_PYTHON" ] || { echo "no python3.12 on PATH: name the GPU machine's Python version as the 2nd argument" >&2; exit 2; }

rm -rf gpu_bundle && mkdir -p gpu_bundle/wheels gpu_bundle/lib gpu_bundle/data
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT

# 1. ffcv compiled for Python 3.12 against this machine's libraries, plus the pure-Python
#    packages the GPU machine lacks (ffcv itself needs none of its other declared ones to import).
"$TARGET_PYTHON" -m venv "$build/venv"
"$build/venv/bin/pip" install -q setuptools wheel
"$build/venv/bin/pip" wheel -q --no-build-isolation --no-deps -w gpu_bundle/wheels \
    ffcv==1.0.2 fastargs==1.2.0 terminaltables==3.1.10 airbench==0.1.8

# 2. The shared libraries ffcv's extension links, minus glibc and the C++ runtime, which the
#    GPU machine has in newer versions (an older libstdc++ first on the path would break torch).
unzip -q -o gpu_bundle/wheels/ffcv-*.whl 'ffcv/_libffcv*' -d "$build"
ldd "$build"/ffcv/_libffcv*.so | awk '$3 ~ /^\// {print $3}' \
    | grep -Ev '/(libc|libm|libpthread|libdl|librt|libstdc\+\+|libgcc_s)\.so' \
    | while read -r library; do cp -L "$library" gpu_bundle/lib/; done

# 3. The data set, as given (an archive or a folder): the GPU machine cannot download it.
cp -r "$DATA" gpu_bundle/data/
du -sh gpu_bundle gpu_bundle/* | sed 's/^/  /'
echo "== gpu_bundle/ ready: copy the repository with it to the GPU machine and run scripts/gpu_run.sh there"
