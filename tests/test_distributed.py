"""Several processes: torchrun with the gloo backend on the CPU, and how the data is sharded."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from fast_cifar.beton import load_dataset_info
from fast_cifar.data import BatchFormat, Sampling, make_loader
from fast_cifar.distributed import World, from_rank_zero, sum_over_ranks

from helpers import REPO


def test_train_shards_cover_each_sample_once_per_epoch(synthetic_folder):
    info = load_dataset_info(synthetic_folder)
    loaders = [make_loader(info, "train", BatchFormat(100, torch.device("cpu")), Sampling(True, seed=1, shard=(rank, 2)),
                           "device") for rank in (0, 1)]
    for epoch in (1, 2):
        orders = [loader.positions(epoch) for loader in loaders]
        assert set(orders[0].tolist()).isdisjoint(orders[1].tolist())
        assert sorted(np.concatenate(orders).tolist()) == list(range(512))
    assert all(len(loader) == 2 for loader in loaders)  # 256 each: two full batches of 100, the rest dropped
    assert not np.array_equal(loaders[0].positions(1), loaders[0].positions(2))


def test_test_shards_split_the_test_set(synthetic_folder):
    info = load_dataset_info(synthetic_folder)
    labels = [torch.cat([y for _, y in make_loader(info, "test", BatchFormat(64, torch.device("cpu")),
                                                   Sampling(False, shard=(rank, 2)), "device")]) for rank in (0, 1)]
    assert len(labels[0]) + len(labels[1]) == 200


def test_a_world_of_one_needs_no_process_group():
    world = World()
    assert world.is_main and torch.equal(sum_over_ranks(torch.ones(2), world), torch.ones(2))
    assert from_rank_zero(0.5, world, torch.device("cpu")) == 0.5


@pytest.mark.slow
def test_torchrun_two_processes_rank_zero_alone_writes(synthetic_folder, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(REPO / "fast_cifar" / "train.py"), "--data.path", str(synthetic_folder), "--data.loader", "device",
               "--model.width", "8", "--training.batch_size", "64", "--training.test_batch_size", "64",
               "--training.epochs", "2", "--training.compile", "false", "--lr_finder.num_iters", "8",
               "--output.dir", str(tmp_path / "runs")]
    scratch = tmp_path / "tmp"  # torchrun leaves a torchelastic_* folder in TMPDIR: here, not in /tmp
    scratch.mkdir()
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env=os.environ | {"OMP_NUM_THREADS": "1", "TMPDIR": str(scratch)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("Maximum Test Accuracy") == 1  # only rank 0 prints
    folders = [path for path in (tmp_path / "runs").iterdir() if not path.name.startswith(".")]
    assert len(folders) == 1  # only rank 0 made a run folder
    assert len(list((tmp_path / "runs" / ".lr_finder").iterdir())) == 1  # and swept once
    record = json.loads((folders[0] / "results.json").read_text())
    assert record["finished"] and record["data"]["processes"] == 2
    assert record["data"]["train_images_per_epoch"] == 512  # 8 steps of a global batch of 64 (32 per rank)
    assert len(record["epochs"]) == 2 and record["lr_finder"]["lrs"]
    assert {p.name for p in folders[0].iterdir()} == {".lock", "results.json", "loss_accuracy_plots.png", "lr_finder.png",
                                                      "checkpoint.pt", "model.pt"}
