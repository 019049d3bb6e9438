#!/usr/bin/env bash
# Run ON THE GPU MACHINE, from the repository root, after scripts/gpu_bundle.sh filled gpu_bundle/.
# Each job takes under 10 minutes on an H100 and packs its results (weights and checkpoints left out, which
# would pass the size a GPU machine can send back) into one archive to copy back,
# $OUT/<job>.tar.gz (OUT defaults to /tmp/fast_cifar_out), with its log beside it:
#   bash scripts/gpu_run.sh batch_check   benchmarks/run.py --rows batches: FFCV's batches behind a slow GPU
#                                   consumer, counted with its asynchronous copy and with the kit's waiting one,
#                                   and one set of weights evaluated through both loaders (about a minute)
#   bash scripts/gpu_run.sh train   the 24-epoch recipe, FFCV loader then the device loader, epoch 2 profiled
#   bash scripts/gpu_run.sh profile the 24-epoch recipe on the device loader, epoch 2 under torch.profiler: its
#                                   top 20 kernels by GPU time in profile/kernels.md (about a minute)
#   bash scripts/gpu_run.sh bench   benchmarks/run.py: the loaders, then the training rows (speed candidates)
#   bash scripts/gpu_run.sh seeds   benchmarks/sweep.py over benchmarks/recipe_candidates.yaml (the recipe, the
#                                   finder anchored on the valley's start, the SGD reference), SEEDS seeds (5), JOBS side by
#                                   side (3), none started after START_UNTIL s (300), all stopped at
#                                   SECONDS_LIMIT s (480): run it again to go on; CANDIDATES=file.yaml for others
#   bash scripts/gpu_run.sh study   benchmarks/sweep.py over rn18_configs/{8,12,16,24,32,40}ep.yaml, SEEDS (2)
#                                   seeds, one at a time (about two calls: CONFIGS="rn18_configs/8ep.yaml ..."
#                                   picks some)
#   bash scripts/gpu_run.sh peers   benchmarks/sweep.py over benchmarks/peers.yaml (the recipe with each loader,
#                                   plain PyTorch, ResNet-9, airbench94 and 96), SEEDS (3) seeds, one run at a
#                                   time for clean timings, none started after START_UNTIL s (420), all stopped
#                                   at SECONDS_LIMIT s (560): run it again to go on; ONLY=name,... picks some
#   bash scripts/gpu_run.sh frontier  benchmarks/sweep.py over benchmarks/frontier_candidates.yaml, PART=1 (the
#                                   reference and one ingredient each, 16 epochs), 2 (all of them, 8 to 40
#                                   epochs) or 3 (64 and 80 epochs), each sized for under 8 minutes (an
#                                   estimate), SEEDS (1) seeds, into one folder; then SEEDS=3 ONLY=winner,...
#                                   confirms; the peers as stars on the plot
# Unpack here with: tar xzf <job>.tar.gz -C benchmarks/results/   Extra arguments go to train.py
# (bench: to benchmarks/run.py). Where ffcv is installed already, it installs nothing from gpu_bundle/wheels
# and uses what is there: so a CPU machine can dry-run every job at a tiny size (PYTHON=.venv/bin/python, DATA=a written
# data folder, tiny flags), as the tests do.
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

if [ -d gpu_bundle/wheels ] && ! "$PYTHON" -c "import ffcv" 2>/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/fast_cifar_site gpu_bundle/wheels/*.whl
    export PYTHONPATH="/tmp/fast_cifar_site:$PWD" LD_LIBRARY_PATH="$PWD/gpu_bundle/lib:${LD_LIBRARY_PATH:-}"
fi
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$RESULTS/nvidia_smi.csv" 2>/dev/null || true
[ -f "$DATA/dataset.json" ] || "$PYTHON" scripts/write_datasets.py --data.source "$(ls -d gpu_bundle/data/* | head -n 1)" --data.path "$DATA"

case "$JOB" in
batch_check)
    "$PYTHON" benchmarks/run.py --rows batches --data.path "$DATA" --out "$RESULTS" "$@" ;;
train)
    for loader in ffcv device; do
        "$PYTHON" fast_cifar/train.py --config rn18_configs/24ep.yaml --data.path "$DATA" --data.loader "$loader" \
            --output.dir "$RESULTS" --output.name "24ep_$loader" --output.checkpoint false --output.profile_epoch 2 "$@"
    done ;;
profile)
    "$PYTHON" fast_cifar/train.py --config rn18_configs/24ep.yaml --data.path "$DATA" --data.loader device \
        --output.dir "$RESULTS" --output.name profile --output.checkpoint false --output.profile_epoch 2 "$@"
    cat "$RESULTS/profile/kernels.md" ;;
bench)
    "$PYTHON" benchmarks/run.py --out "$RESULTS" --data.path "$DATA" "$@" ;;
seeds)
    timeout --signal=TERM "${SECONDS_LIMIT:-480}" "$PYTHON" benchmarks/sweep.py --out "$RESULTS" \
        --candidates "${CANDIDATES:-benchmarks/recipe_candidates.yaml}" \
        --seeds "${SEEDS:-5}" --jobs "${JOBS:-3}" --stop-starting-after "${START_UNTIL:-300}" \
        --data.path "$DATA" --data.loader_threads 5 --output.checkpoint false "$@" \
        || echo "sweep.py stopped early (exit $?): the finished runs are kept; run the job again to go on" ;;
study)
    read -r -a configs <<< "${CONFIGS:-$(echo rn18_configs/{8,12,16,24,32,40}ep.yaml)}"
    "$PYTHON" benchmarks/sweep.py --out "$RESULTS" --configs "${configs[@]}" --seeds "${SEEDS:-2}" \
        --data.path "$DATA" --output.checkpoint false "$@" ;;
peers)
    timeout --signal=TERM "${SECONDS_LIMIT:-560}" "$PYTHON" benchmarks/sweep.py --out "$RESULTS" \
        --candidates benchmarks/peers.yaml --seeds "${SEEDS:-3}" --stop-starting-after "${START_UNTIL:-420}" \
        ${ONLY:+--only "$ONLY"} --data.path "$DATA" --output.checkpoint false "$@" \
        || echo "sweep.py stopped early or a peer failed (exit $?): the finished runs are kept; run the job again to go on" ;;
frontier)
    case "${PART:-1}" in
    1) part=reference,recipe_24,recipe_16,cutout_16,alternating_16,ema_16,norm_lr_16,batch1024_16 ;;
    2) part=all_8,all_12,all_16,all_24,all_40 ;;
    3) part=all_64,all_80,reference_80 ;;
    *) echo "PART must be 1, 2 or 3, not '$PART'" >&2; exit 2 ;;
    esac
    timeout --signal=TERM "${SECONDS_LIMIT:-470}" "$PYTHON" benchmarks/sweep.py --out "$RESULTS" \
        --candidates benchmarks/frontier_candidates.yaml --seeds "${SEEDS:-1}" --only "${ONLY:-$part}" \
        --stop-starting-after "${START_UNTIL:-400}" --peers benchmarks/results/peers_h200/peers.json \
        --data.path "$DATA" --output.checkpoint false "$@" \
        || echo "sweep.py stopped early or a run failed (exit $?): the finished runs are kept; run the job again to go on" ;;
*)
    echo "unknown job '$JOB': batch_check, train, profile, bench, seeds, study, peers or frontier" >&2; exit 2 ;;
esac
tar czf "$OUT/$JOB.tar.gz" --exclude="*.pt" --exclude=".lock" -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")"
ls -la "$OUT"
