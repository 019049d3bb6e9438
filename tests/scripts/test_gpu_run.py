"""scripts/gpu_run.sh, every job dry-run on the CPU at a tiny size, so no GPU minute is lost to a typo."""
import json
import os
import subprocess
import sys
import tarfile

import pytest
import yaml

from fast_cifar.beton import load_dataset_info

from helpers import REPO, TINY_RUN

# One dry run per code path of the script: batch_check, bench, train and profile run the functions the
# session's parts run (bench, recipe), with other flags; benchmarks/run.py's rows are tested in
# tests/benchmarks/test_benchmarks.py.
JOBS = {
    # every measurement a lent GPU makes first, in one call: the batch check, the recipe's two rows (1 seed
    # each here), the profile (of epoch 2) and the frontier's reference
    "session": ({"SEEDS": "1", "ONLY": "reference"},  # the recipe's rows read through the loader each one names
                [*TINY_RUN, "--data.loader", "device", "--data.loader_threads", "2", "--training.epochs", "2"]),
    "study": ({"SEEDS": "1", "CONFIGS": "rn18_configs/8ep.yaml"}, [*TINY_RUN, "--data.loader", "device"]),
    # the recipe's two rows are the session's runs: the peers' own scripts and settings here
    "peers": ({"SEEDS": "1", "ONLY": "plain_pytorch,resnet9,airbench94,airbench96"},
              [*TINY_RUN, "--data.loader", "device", "--training.epochs", "2", "--training.batch_size", "32"]),  # ResNet-9 warms up 2+ steps
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
                "study": ["sweep.json"],
                "peers": ["peers.json"]}[job]
    assert {f"{job}/{name}" for name in expected} <= set(names), names
    assert not [name for name in names if name.endswith(".pt")]  # weights stay behind: the archive must travel
    results = tmp_path / "results" / job
    if job == "peers":  # every peer asked for ran but airbench's, which needs CUDA
        not_run = json.loads((results / "peers.json").read_text())["not_run"]
        assert set(not_run) == {"airbench94", "airbench96"}, not_run
        by_hand = json.loads((results / "runs" / "plain_pytorch" / "seed0" / "results.json").read_text())
        peers = yaml.safe_load((REPO / "benchmarks" / "peers.yaml").read_text())
        no_finder = peers["plain_pytorch"]["settings"]["training.lr"]  # it trains at the LR its candidate gives
        assert by_hand["loader"].startswith("torchvision DataLoader") and by_hand["max_lr"] == no_finder
        resnet9 = json.loads((results / "runs" / "resnet9" / "seed0" / "results.json").read_text())
        assert resnet9["model"]["arch"] == "resnet9" and resnet9["finished"]
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
