#!/usr/bin/env bash
# Set up, write the .beton files if missing, and train: the 24-epoch recipe on a GPU,
# a small CPU configuration (a few minutes) without one.
#   bash scripts/main.sh                                          # CIFAR-10 from torchvision
#   bash scripts/main.sh cifar10-jpeg.tar.gz   # a local copy (archive or folder), no internet needed
set -euo pipefail
cd "$(dirname "$0")/.."
SOURCE=${1:-download}

bash scripts/setup.sh
if [ ! -f data/cifar10/dataset.json ]; then
    if ! .venv/bin/python scripts/write_datasets.py --data.source "$SOURCE" --data.path data/cifar10; then
        echo "To use a local copy of CIFAR-10 instead: bash scripts/main.sh PATH (an archive or folder of CIFAR-10)" >&2
        exit 2
    fi
fi

if .venv/bin/python -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    CONFIG=rn18_configs/24ep.yaml
else
    CONFIG=rn18_configs/cpu_small.yaml
    echo "== no GPU: running the small CPU configuration $CONFIG (a few minutes); on a GPU this runs rn18_configs/24ep.yaml"
fi
.venv/bin/python fast_cifar/train.py --config "$CONFIG"
