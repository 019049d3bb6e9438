#!/usr/bin/env bash
# Set up, then run the test suite on the CPU (no GPU needed). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Two test processes, one per core of a 2-core machine: most tests wait on imports, FFCV's JIT or a child
# process, not on arithmetic. OpenMP threads then sleep while they wait instead of spinning: spinning, each
# process's torch threads would take the other's core (the suite ran slower in two processes than in one).
OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m pytest -q -n 2 "$@"
