"""What benchmarks/results holds speaks of the project only: no folders of the machines that made it."""
import json
import subprocess

from fast_cifar.results import shape_problem

from helpers import REPO, load_script

MACHINE_PATH = load_script("scripts/strip_machine_paths.py").MACHINE_PATH


def committed(pattern):
    listed = subprocess.run(["git", "ls-files", pattern], cwd=REPO, capture_output=True, text=True).stdout
    return [REPO / line for line in listed.splitlines()]


def test_no_record_names_a_machine_path():
    reports = [path for suffix in ("md", "json", "log") for path in committed(f"benchmarks/results/*.{suffix}")]
    assert reports, "no committed record found"
    offending = [f"{path.relative_to(REPO)}: {line.strip()[:120]}" for path in reports
                 for line in path.read_text().splitlines() if MACHINE_PATH.search(line)]
    assert not offending, "\n".join(offending)


def test_every_committed_run_record_has_the_declared_shape():
    """So that compare.py, sweep.py and lr_rules.py read them as they read a new run."""
    records = [path for path in committed("benchmarks/results/*results.json")
               if "epochs" in json.loads(path.read_text())]  # not the benchmarks' own results.json
    assert records, "no committed run record found"
    assert not [f"{path.relative_to(REPO)}: {problem}" for path in records
                if (problem := shape_problem(json.loads(path.read_text())))]


def test_no_run_folder_lock_is_committed():
    assert not committed("benchmarks/results/*.lock")


def test_machine_paths_keep_only_what_means_something_elsewhere():
    strip = load_script("scripts/strip_machine_paths.py").strip
    assert strip("run folder: /tmp/out/gpu_peers/runs/resnet9/seed0 | x") == "run folder: runs/resnet9/seed0 | x"
    assert strip('"--config /work/repo/rn18_configs/24ep.yaml"') == '"--config rn18_configs/24ep.yaml"'
    assert strip("/opt/venv/lib/python3.12/site-packages/torch/a.py:3: warning") == "site-packages/torch/a.py:3: warning"
    assert strip("image folder at .carry/cifar10-jpeg.tar.gz") == "image folder at cifar10-jpeg.tar.gz"
    assert strip("already portable: runs/x and fast_cifar/train.py") == "already portable: runs/x and fast_cifar/train.py"
