"""What several tests share besides fixtures: where the project is, and how to run its scripts."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# A CIFAR-10 copy (an archive or folder write_datasets.py accepts) for the tests that need real images.
OFFLINE_COPY = Path(os.environ["FAST_CIFAR_COPY"]) if os.environ.get("FAST_CIFAR_COPY") else None


def run_script(script, *args, cwd=REPO):
    """Run one of the project's command-line scripts the way a user does."""
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.strip()]
