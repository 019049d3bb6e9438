#!/usr/bin/env bash
# Run ON THE GPU MACHINE, from the repository root, after scripts/gpu_bundle.sh filled .carry/.
# Each job fits in 10 minutes of an H100 and packs its results into one archive to copy back,
# $OUT/<job>.tar.gz (OUT defaults to /tmp/fast_cifar_out), with its log beside it:
#   bash scripts/gpu_run.sh train   the 24-epoch recipe, FFCV loader then the device loader, epoch 2 profiled
#   bash scripts/gpu_run.sh bench   benchmarks/run.py in GPU mode
#   bash scripts/gpu_run.sh tune    benchmarks/tuning.py: the candidates in benchmarks/tuning_candidates.yaml,
#                                   TUNE_SEEDS seeds (2), TUNE_JOBS side by side (3), none started after
#                                   TUNE_START_UNTIL s (300), all stopped at TUNE_SECONDS s (480)
#   bash scripts/gpu_run.sh study   benchmarks/accuracy_vs_time.py (8 to 40 epochs: about two calls;
#                                   STUDY_CONFIGS=rn18_configs/8ep.yaml,rn18_configs/12ep.yaml picks some)
# Unpack here with: tar xzf <job>.tar.gz -C benchmarks/results/   Extra arguments go to train.py.
set -euo pipefail
cd "$(dirname "$0")/.."
JOB=${1:-train}
shift || true
OUT=${OUT:-/tmp/fast_cifar_out}
PYTHON=${PYTHON:-python3}
DATA=${DATA:-/tmp/fast_cifar_data}
RESULTS=${RESULTS:-/tmp/fast_cifar_results/gpu_$JOB}  # a folder with earlier runs extends them
mkdir -p "$OUT" "$RESULTS"
exec > >(tee "$OUT/$JOB.log") 2>&1

"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/fast_cifar_site .carry/wheels/*.whl
export PYTHONPATH="/tmp/fast_cifar_site:$PWD" LD_LIBRARY_PATH="$PWD/.carry/lib:${LD_LIBRARY_PATH:-}"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$RESULTS/nvidia_smi.csv" || true
[ -f "$DATA/dataset.json" ] || "$PYTHON" scripts/write_datasets.py --data.source .carry/cifar10-jpeg.tar.gz --data.path "$DATA"

case "$JOB" in
train)
    for loader in ffcv device; do
        "$PYTHON" fast_cifar/train.py --config rn18_configs/24ep.yaml --data.path "$DATA" --data.loader "$loader" \
            --output.dir "$RESULTS" --output.name "24ep_$loader" --output.checkpoint false --output.profile_epoch 2 "$@"
    done ;;
bench)
    "$PYTHON" benchmarks/run.py --bench.mode gpu --bench.data "$DATA" --bench.out "$RESULTS" ;;
tune)
    timeout --signal=TERM "${TUNE_SECONDS:-480}" "$PYTHON" benchmarks/tuning.py --out "$RESULTS" \
        --seeds "${TUNE_SEEDS:-2}" --jobs "${TUNE_JOBS:-3}" --stop-starting-after "${TUNE_START_UNTIL:-300}" \
        ${TUNE_ONLY:+--only "$TUNE_ONLY"} --data.path "$DATA" --data.loader_threads 5 "$@" \
        || echo "tuning.py stopped early (exit $?): the finished runs are kept" ;;
study)
    "$PYTHON" benchmarks/accuracy_vs_time.py --study.out "$RESULTS" ${STUDY_CONFIGS:+--study.configs "$STUDY_CONFIGS"} \
        --study.overrides "--data.path $DATA $*" ;;
*)
    echo "unknown job '$JOB': train, bench, tune or study" >&2; exit 2 ;;
esac
tar czf "$OUT/$JOB.tar.gz" -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")"
ls -la "$OUT"
