#!/usr/bin/env bash
# Run ON THE GPU MACHINE, from the repository root, after scripts/gpu_bundle.sh filled gpu_bundle/.
# Each job takes under 10 minutes on an H100 and packs its results (weights and checkpoints left out, which
# would pass the size a GPU machine can send back; paths of this machine stripped from the records) into one
# archive to copy back,
# $OUT/<job>.tar.gz (OUT defaults to /tmp/fast_cifar_out), with its log beside it:
#   bash scripts/gpu_run.sh session what a lent GPU measures first, in one call, each part packed as soon as it
#                                   is done and none started past LIMIT s (540): the batch check; the recipe's
#                                   two rows (recipe_candidates.yaml: the device loader over 3 seeds, FFCV's over
#                                   2; the first run compiles into an emptied cache, the rest find it); the
#                                   profile; the frontier's first screen (PART=1) as far as the time goes
#   bash scripts/gpu_run.sh batch_check   benchmarks/run.py --rows batches: FFCV's batches behind a slow GPU
#                                   consumer, counted with its asynchronous copy and with the kit's waiting one,
#                                   and one set of weights evaluated through both loaders (about a minute)
#   bash scripts/gpu_run.sh train   the 24-epoch recipe, FFCV loader then the device loader, epoch 2 profiled
#   bash scripts/gpu_run.sh profile the 24-epoch recipe on the device loader, epoch 2 under torch.profiler: its
#                                   top 20 kernels by GPU time in profile/kernels.md (about a minute)
#   bash scripts/gpu_run.sh bench   benchmarks/run.py: the loaders, then the training rows (speed candidates)
#   bash scripts/gpu_run.sh seeds   benchmarks/sweep.py over benchmarks/recipe_candidates.yaml (the recipe with
#                                   each loader, the SGD reference), SEEDS seeds (5), JOBS side by
#                                   side (3), none started after START_UNTIL s (300), all stopped 100 s
#                                   later: run it again to go on; CANDIDATES=file.yaml for others
#   bash scripts/gpu_run.sh study   benchmarks/sweep.py over rn18_configs/{8,12,16,24,32,40}ep.yaml, SEEDS (2)
#                                   seeds, one at a time (about two calls: CONFIGS="rn18_configs/8ep.yaml ..."
#                                   picks some)
#   bash scripts/gpu_run.sh peers   benchmarks/sweep.py over benchmarks/peers.yaml (the recipe with each loader,
#                                   plain PyTorch, ResNet-9, airbench94 and 96), SEEDS (3) seeds, one run at a
#                                   time for clean timings, none started after START_UNTIL s (420), all stopped
#                                   100 s later: run it again to go on; ONLY=name,... picks some
#   bash scripts/gpu_run.sh frontier  benchmarks/sweep.py over benchmarks/frontier_candidates.yaml, PART=1 (the
#                                   reference and one ingredient each, 16 epochs), 2 (all of them, 8 to 40
#                                   epochs) or 3 (64 and 80 epochs), each sized for under 8 minutes (an
#                                   estimate), SEEDS (1) seeds, into one folder; then SEEDS=3 ONLY=winner,...
#                                   confirms; the peers as stars on the plot
# Unpack here with: tar xzf <job>.tar.gz -C benchmarks/results/   Extra arguments go to train.py
# (bench: to benchmarks/run.py). Where ffcv is installed already, it installs nothing from gpu_bundle/wheels
# and uses what is there: so a CPU machine can dry-run every job at a tiny size (PYTHON=.venv/bin/python, DATA=a written
# data folder, tiny flags), as tests/scripts/test_gpu_run.py does.
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

FRONTIER_PART_1=reference,recipe_24,recipe_16,cutout_16,alternating_16,ema_16,norm_lr_16,batch1024_16

# The measurements, each into the folder it is given (a job's own, or a part of the session's).
bench() {  # bench OUT FLAGS...: benchmarks/run.py
    local out=$1; shift
    "$PYTHON" benchmarks/run.py --data.path "$DATA" --out "$out" "$@"
}
recipe() {  # recipe OUT NAME LOADER FLAGS...: the 24-epoch recipe, epoch 2 profiled
    local out=$1 name=$2 loader=$3; shift 3
    "$PYTHON" fast_cifar/train.py --config rn18_configs/24ep.yaml --data.path "$DATA" --data.loader "$loader" \
        --output.dir "$out" --output.name "$name" --output.checkpoint false --output.profile_epoch 2 "$@"
    cat "$out/$name/kernels.md"
}
sweep() {  # sweep OUT SECONDS CANDIDATES ONLY SEEDS FLAGS...: none started after SECONDS, all stopped 100 s later
    local out=$1 seconds=$2 candidates=$3 only=$4 seeds=$5; shift 5
    timeout --signal=TERM "$((seconds + 100))" "$PYTHON" benchmarks/sweep.py --out "$out" --candidates "$candidates" \
        ${only:+--only "$only"} --seeds "$seeds" --stop-starting-after "$seconds" --data.path "$DATA" \
        --output.checkpoint false "$@" \
        || echo "sweep.py stopped early or a run failed (exit $?): the finished runs are kept; run the job again to go on"
}
pack() {  # the records name no folder of this machine, then into one archive
    "$PYTHON" scripts/strip_machine_paths.py "$RESULTS" >/dev/null
    tar czf "$OUT/$JOB.tar.gz" --exclude="*.pt" --exclude=".lock" -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")"
}

case "$JOB" in
session)
    deadline=$((SECONDS + ${LIMIT:-540}))
    left() { echo $((deadline - SECONDS)); }
    part() {  # part NAME COMMAND...: run it if there is time left, then pack everything so far
        if [ "$(left)" -lt 60 ]; then echo "== $1: not started, $(left) s left"; return; fi
        echo "== $1: started with $(left) s left"
        shift
        "$@" || echo "== stopped or failed (exit $?): what it finished is kept"
        pack
    }
    part "1. batch check" bench "$RESULTS/batch_check" --rows batches "$@"
    part "2. the recipe's rows" sweep "$RESULTS/recipe" "$(($(left) - 200))" benchmarks/recipe_candidates.yaml \
        recipe_device,recipe_ffcv "${SEEDS:-3}" --fresh-compile-cache "$@"
    part "3. profile" recipe "$RESULTS" profile device "$@"
    part "4. frontier, first screen" sweep "$RESULTS/frontier" "$(($(left) - 100))" \
        benchmarks/frontier_candidates.yaml "${ONLY:-$FRONTIER_PART_1}" 1 \
        --peers benchmarks/results/peers_h200/peers.json "$@" ;;
batch_check)
    bench "$RESULTS" --rows batches "$@" ;;
train)
    for loader in ffcv device; do
        recipe "$RESULTS" "24ep_$loader" "$loader" "$@"
    done ;;
profile)
    recipe "$RESULTS" profile device "$@" ;;
bench)
    bench "$RESULTS" "$@" ;;
seeds)
    sweep "$RESULTS" "${START_UNTIL:-300}" "${CANDIDATES:-benchmarks/recipe_candidates.yaml}" "" "${SEEDS:-5}" \
        --jobs "${JOBS:-3}" --data.loader_threads 5 "$@" ;;
study)
    read -r -a configs <<< "${CONFIGS:-$(echo rn18_configs/{8,12,16,24,32,40}ep.yaml)}"
    "$PYTHON" benchmarks/sweep.py --out "$RESULTS" --configs "${configs[@]}" --seeds "${SEEDS:-2}" \
        --data.path "$DATA" --output.checkpoint false "$@" ;;
peers)
    sweep "$RESULTS" "${START_UNTIL:-420}" benchmarks/peers.yaml "${ONLY:-}" "${SEEDS:-3}" "$@" ;;
frontier)
    case "${PART:-1}" in
    1) part=$FRONTIER_PART_1 ;;
    2) part=all_8,all_12,all_16,all_24,all_40 ;;
    3) part=all_64,all_80,reference_80 ;;
    *) echo "PART must be 1, 2 or 3, not '$PART'" >&2; exit 2 ;;
    esac
    sweep "$RESULTS" "${START_UNTIL:-400}" benchmarks/frontier_candidates.yaml "${ONLY:-$part}" "${SEEDS:-1}" \
        --peers benchmarks/results/peers_h200/peers.json "$@" ;;
*)
    echo "unknown job '$JOB': session, batch_check, train, profile, bench, seeds, study, peers or frontier" >&2; exit 2 ;;
esac
pack
ls -la "$OUT"
