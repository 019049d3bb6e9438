"""The benchmark commands at a tiny size, so they cannot rot (they measure nothing here)."""
import importlib
import json

import pytest
import torch

from fast_cifar.beton import load_dataset_info, write_dataset
from fast_cifar.config import declare_train_sections, parse_config
from fast_cifar.data import BatchFormat, Sampling, make_loader
from fast_cifar.sources import make_synthetic

from helpers import REPO, error_lines, run_main, run_script

pytestmark = pytest.mark.slow  # benchmarks/run.py compiles its rows


def test_run_writes_every_row_table_and_plots(synthetic_folder, tmp_path):
    # the uncompiled training rows: a compiled row takes a minute on a CPU
    result = run_main("benchmarks/run.py", "--out", tmp_path, "--data.path", synthetic_folder,
                        "--rows", "loaders,plain_pytorch,compile=off", "--loader_images", 640,
                        "--warmup_steps", 1, "--timed_steps", 1, "--model.width", 4,
                        "--training.batch_size", 16, "--data.loader_threads", 2)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    loaders = [row["loader"] for row in results["loaders"]]
    assert {"ffcv", "device"} <= set(loaders) and len(set(loaders)) == len(loaders)
    assert [row["name"] for row in results["training"]] == ["plain_pytorch", "compile=off"]
    assert results["training"][0]["speedup"] == 1.0 and results["training"][1]["batch_size"] == 16  # the flag's
    assert all(row["images_per_second"] > 0 for row in results["loaders"] + results["training"])
    table = (tmp_path / "table.md").read_text()
    assert all(f"| {row['name']} |" in table for row in results["training"])  # every row in the table
    for plot in ("loaders.png", "training.png"):
        assert (tmp_path / plot).read_bytes()[:4] == b"\x89PNG"


def test_ctrl_c_mid_measurement_is_one_line_and_leaves_nothing(synthetic_folder, tmp_path):
    result = run_main("benchmarks/run.py", "--out", tmp_path, "--data.path", synthetic_folder, "--rows", "loaders",
                      "--loader_images", 128, "--training.batch_size", 64, "--data.loader_threads", 2,
                      interrupt_in="measure_loader")
    assert result.returncode == 130 and error_lines(result.stderr) == ["stopped by SIGINT"]
    assert not list(tmp_path.iterdir())  # no results.json, no table, no temporary


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="--beside reads an earlier commit through git")
def test_run_puts_an_earlier_commits_loader_rows_beside_this_trees(synthetic_folder, tmp_path):
    # the device loader alone: each row is a process of its own, and the device loader's starts fastest
    common = ["--data.path", synthetic_folder, "--rows", "loaders", "--loaders", "torchvision,device",
              "--loader_images", 128, "--training.batch_size", 64, "--data.loader_threads", 2]
    result = run_script("benchmarks/run.py", "--out", tmp_path, *common, "--beside", "HEAD", "--repeats", 2)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    rows = {(row["repeat"], row["commit"], row["loader"]): row["images_per_second"] for row in results["loaders"]}
    this = results["commit"]
    assert set(rows) == {(repeat, commit, loader) for repeat in (0, 1) for commit, loader in
                         (("-", "torchvision"), ("HEAD", "device"), (this, "device"))}
    assert all(rate > 0 for rate in rows.values())
    assert "| device at HEAD (round 2) |" in (tmp_path / "table.md").read_text()

    refused = run_main("benchmarks/run.py", "--out", tmp_path / "other", *common, "--beside", "no-such-commit")
    assert refused.returncode == 2 and len(error_lines(refused.stderr)) == 1 and not (tmp_path / "other").exists()


def test_loader_steps_times_each_cut_of_the_pipeline(synthetic_folder, tmp_path):
    result = run_main("benchmarks/loader_steps.py", "--out", tmp_path, "--data.path", synthetic_folder,
                        "--images", 128, "--rounds", 1, "--training.batch_size", 64, "--threads", 2)
    assert result.returncode == 0, result.stderr[-3000:]
    rates = json.loads((tmp_path / "results.json").read_text())["images_per_second"]
    assert len(rates) == 5 and all(len(each) == 1 and min(each) > 0 for each in rates.values())
    table = (tmp_path / "table.md").read_text()
    assert all(f"| {cut} |" in table for cut in rates)


def test_the_async_copy_row_reads_through_transfers_that_do_not_wait(synthetic_folder, monkeypatch):
    from ffcv.transforms import ToDevice

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    run = importlib.import_module("run")
    loader = make_loader(load_dataset_info(synthetic_folder), "train", BatchFormat(64, torch.device("cpu")),
                         Sampling(train=True), "ffcv", 2)
    transfers = [op for spec in loader.pipeline_specs.values() for op in spec.transforms if isinstance(op, ToDevice)]
    assert transfers and not any(op.non_blocking for op in transfers)  # the kit's loader waits
    run.with_async_copy(loader)
    assert all(op.non_blocking for op in transfers)


@pytest.mark.parametrize("flags", [["--rows", "recipe,turbo"], ["--loaders", "ffcv,turbo"]])
def test_run_refuses_an_unknown_row_or_loader(synthetic_folder, tmp_path, flags):
    result = run_main("benchmarks/run.py", "--out", tmp_path, "--data.path", synthetic_folder, *flags)
    assert result.returncode == 2 and len(error_lines(result.stderr)) == 1 and "turbo" in result.stderr


def test_the_speed_candidates_run(tmp_path, monkeypatch):
    # The foreach optimizer and batch 1024 rows, uncompiled (from the config, as the recipe row reads it) so
    # that a CPU runs them in seconds (what they measure is the GPU's: scripts/gpu_run.sh bench), on a set with
    # a full batch of 1024.
    write_dataset(make_synthetic(1024, 100), tmp_path / "data", "synthetic", num_workers=2)
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    run = importlib.import_module("run")
    args = ["--out", str(tmp_path / "out"), "--rows", "recipe,fused=False,batch_size=1024", "--warmup_steps", "1",
            "--timed_steps", "1", "--model.width", "4", "--training.batch_size", "16", "--data.loader_threads", "2",
            "--training.compile", "false", "--training.precision", "fp32"]
    results = run.main([*args, "--data.path", str(tmp_path / "data")])
    rows = {row["name"]: row for row in results["training"]}
    # on a CPU the recipe's optimizer is the foreach one already: the fused=False row would repeat it
    assert set(rows) == {"recipe", "batch_size=1024"} and rows["recipe"]["fused"] is False
    assert rows["recipe"]["batch_size"] == 16 and rows["batch_size=1024"]["batch_size"] == 1024
    assert rows["batch_size=1024"]["images_per_second"] > 0
    # the recipe's other ingredients are train.py's picks from the same config on this device
    assert {row["compile"] for row in rows.values()} == {"off"} and {row["loader"] for row in rows.values()} == {"ffcv"}

    # a batch larger than the split is one line, not an endless pass over empty epochs
    write_dataset(make_synthetic(512, 100), tmp_path / "small", "synthetic", num_workers=2)
    with pytest.raises(SystemExit) as stopped:
        run.main([*args, "--data.path", str(tmp_path / "small")])
    assert stopped.value.code == 2


def test_each_training_row_changes_one_ingredient_of_the_recipe_train_py_runs(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    run = importlib.import_module("run")
    cfg = parse_config(declare_train_sections, ["--training.batch_size", "64"])
    recipe = run.recipe_ingredients(cfg, torch.device("cpu"))
    assert recipe["loader"] == "ffcv" and recipe["batch_size"] == 64 and not recipe["fused"]  # the CPU's picks
    on_a_gpu = recipe | {"loader": "device", "fused": True}
    rows = run.training_rows(on_a_gpu)
    assert "loader=device" not in rows and rows["recipe"] == on_a_gpu  # no row repeats the recipe
    for name, row in rows.items():
        if name not in ("recipe", "plain_pytorch"):
            key, value = name.split("=")
            assert {k for k in row if row[k] != on_a_gpu[k]} == {key} and str(row[key]) == value


def test_the_batch_check_tells_duplicate_torn_and_missing_batches(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    classify = importlib.import_module("run").classify
    expected = [(torch.tensor([float(i), i + 0.5]), torch.tensor([i, i])) for i in range(4)]
    torn = (torch.tensor([1.0, 2.5]), torch.tensor([1, 2]))  # half of batch 1, half of batch 2
    # batch 0 right, then batch 2 early in batch 1's place (a duplicate), a torn one, batch 3 right
    counts = classify([expected[0], expected[2], torn, expected[3]], expected)
    assert counts == {"batches": 4, "expected": 4, "correct": 2, "duplicate": 1, "torn": 1, "missing": 1,
                      "wrong_labels": 2 + 1}
    assert classify(expected, expected)["correct"] == 4 and classify(expected[:3], expected)["missing"] == 1
