"""scripts/gpu_run.sh dry-run on the CPU at a tiny size, each code path once, so no GPU minute is lost to a typo."""
import json
import os
import subprocess
import sys
import tarfile

import pytest

from fast_cifar.beton import load_dataset_info

from helpers import REPO, TINY_RUN

# One dry run per code path of the script. batch_check, bench, train and profile run the functions the
# session's parts run (bench, recipe), with other flags; seeds, peers and frontier run its `sweep`.
# benchmarks/run.py's rows are tested in tests/benchmarks/test_benchmarks.py, and every committed candidate's
# settings in tests/benchmarks/test_sweep.py.
JOBS = {
    # every measurement a lent GPU makes first, in one call: the batch check, the recipe's two rows (1 seed
    # each here), the profile (of epoch 2) and the frontier's reference
    "session": ({"SEEDS": "1", "ONLY": "reference"},  # the recipe's rows read through the loader each one names
                [*TINY_RUN, "--data.loader", "device", "--data.loader_threads", "2", "--training.epochs", "2"]),
    "study": ({"SEEDS": "1", "CONFIGS": "rn18_configs/8ep.yaml"}, [*TINY_RUN, "--data.loader", "device"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("job", JOBS)
def test_every_job_runs_and_packs_its_results(job, synthetic_folder, tmp_path):
    env, flags = JOBS[job]
    env = {**os.environ, **env, "PYTHON": sys.executable, "DATA": str(synthetic_folder), "OUT": str(tmp_path / "out"),
           "RESULTS": str(tmp_path / "results" / job)}
    result = subprocess.run(["bash", str(REPO / "scripts" / "gpu_run.sh"), job, *flags], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with tarfile.open(tmp_path / "out" / f"{job}.tar.gz") as archive:
        names = archive.getnames()
    expected = {"session": ["batch_check/table.md", "recipe/recipe_candidates.json", "profile/kernels.md",
                            "frontier/frontier_candidates.png"],
                "study": ["sweep.json"]}[job]
    assert {f"{job}/{name}" for name in expected} <= set(names), names
    assert not [name for name in names if name.endswith(".pt")]  # weights stay behind: the archive must travel
    results = tmp_path / "results" / job
    if job == "session":  # on a CPU no copy is asynchronous: every batch arrives whole, both ways
        record = json.loads((results / "batch_check" / "results.json").read_text())
        batch_size = int(TINY_RUN[TINY_RUN.index("--training.batch_size") + 1])
        check, train_batches = record["batches"], load_dataset_info(synthetic_folder).records["train"] // batch_size
        assert {(row["split"], row["loader"]) for row in check["rows"]} == {
            (split, loader) for split in ("train", "test") for loader in ("ffcv", "ffcv_async_copy")}
        assert all(row["correct"] == row["expected"] == row["batches"] > 0 for row in check["rows"])
        assert [row["batches"] for row in check["rows"] if row["split"] == "train"] == [train_batches] * 2
        assert check["evaluations_equal"] and record["device"]["type"] == "cpu" and not record["loaders"]
        assert 0 < check["check_seconds_per_epoch"] < 1
        # the recipe's rows: each loader as its candidate says, whatever the flags; the first run compiled cold
        for loader in ("device", "ffcv"):
            run = json.loads((results / "recipe" / "runs" / f"recipe_{loader}" / "seed0" / "results.json").read_text())
            assert run["finished"] and run["config"]["data"]["loader"] == loader and run["lr_finder"]["lrs"]
        assert (results / "recipe" / "compile_cache").is_dir()
        profiled = json.loads((results / "profile" / "results.json").read_text())
        assert profiled["finished"] and len(profiled["epochs"]) == 2
        reference = json.loads((results / "frontier" / "runs" / "reference" / "seed0" / "results.json").read_text())
        assert reference["finished"] and reference["config"]["augment"]["cutout"] == 12
        assert "test_accuracy_multicrop_tta" in reference["last"]
    if job == "study":  # the flags given win over the config's 8 epochs
        record = json.loads((results / "runs" / "8ep" / "seed0" / "results.json").read_text())
        assert record["finished"] and len(record["epochs"]) == 1
