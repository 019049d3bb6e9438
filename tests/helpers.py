"""What several tests share besides fixtures: where the project is, and how to run its scripts."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OFFLINE_COPY = REPO.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"  # the offline CIFAR-10 copy, if present


def run_script(script, *args, cwd=REPO):
    """Run one of the project's command-line scripts the way a user does."""
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.strip()]
