#!/usr/bin/env bash
# Run ON THE GPU MACHINE, from the repository root, after scripts/gpu_bundle.sh filled .carry/:
# installs the carried packages, writes the .beton files, trains the 24-epoch recipe with
# FFCV's loader and with the GPU data path, and leaves the results in $OUT (default
# benchmarks/results/gpu): each run's results.json and loss/accuracy plot, nvidia-smi, the log.
# Extra arguments go to every train.py run.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu}
PYTHON=${PYTHON:-python3}
DATA=${DATA:-/tmp/fast_cifar_data}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1

"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/fast_cifar_site .carry/wheels/*.whl
export PYTHONPATH="/tmp/fast_cifar_site:$PWD" LD_LIBRARY_PATH="$PWD/.carry/lib:${LD_LIBRARY_PATH:-}"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$OUT/nvidia_smi.csv" || true

"$PYTHON" scripts/write_datasets.py --data.source .carry/cifar10-jpeg.tar.gz --data.path "$DATA"
for loader in ffcv gpu; do
    "$PYTHON" fast_cifar/train.py --config rn18_configs/24ep.yaml --data.path "$DATA" --data.loader "$loader" \
        --output.dir "$OUT" --output.name "24ep_${loader}_loader" --output.checkpoint false "$@"
    rm -f "$OUT/24ep_${loader}_loader/lr_finder.png"  # $OUT returns at most 8 files
done
ls -R "$OUT"
