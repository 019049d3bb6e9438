"""What benchmarks/results holds speaks of the project only: no folders of the machines that made it."""
import re
import subprocess

from helpers import REPO

# an absolute path into a machine's own folders, or a folder beside a checkout that only its machine has
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:tmp|root|home|work|opt|mnt|var|usr|scratch)/|\.carry/|\.\./shared/")


def committed(pattern):
    listed = subprocess.run(["git", "ls-files", pattern], cwd=REPO, capture_output=True, text=True).stdout
    return [REPO / line for line in listed.splitlines()]


def test_no_report_names_a_machine_path():
    reports = committed("benchmarks/results/*.md")
    assert reports, "no committed report found"
    offending = [f"{path.relative_to(REPO)}: {line.strip()[:120]}" for path in reports
                 for line in path.read_text().splitlines() if MACHINE_PATH.search(line)]
    assert not offending, "\n".join(offending)


def test_no_run_folder_lock_is_committed():
    assert not committed("benchmarks/results/*.lock")
