"""Interruption and resumption: a stopped run continues to the same weights as an uninterrupted one."""
import json
import signal
import subprocess
import sys

import pytest
import torch

from fast_cifar import train

from conftest import REPO, error_lines


def run_args(data, out, name):
    # The GPU data path (here on the CPU) draws augmentations from torch's seeded generator,
    # and deterministic mode pins the kernels: the run is repeatable bit for bit.
    return ["--data.path", str(data), "--data.loader", "gpu", "--model.width", "8", "--training.batch_size", "64",
            "--training.test_batch_size", "100", "--training.epochs", "3", "--training.compile", "false",
            "--lr_finder.num_iters", "8", "--training.deterministic", "true", "--output.dir", str(out),
            "--output.name", name]


def interrupt_after_first_epoch(args):
    process = subprocess.Popen([sys.executable, "-u", str(REPO / "fast_cifar" / "train.py"), *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line.startswith("epoch   1/3"):
            process.send_signal(signal.SIGTERM)
            break
    stdout, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


def weights(folder):
    return torch.load(folder / "model.pt")


def test_interrupted_run_resumes_to_the_same_weights(synthetic_folder, tmp_path):
    train.main(run_args(synthetic_folder, tmp_path, "whole"))

    code, stderr = interrupt_after_first_epoch(run_args(synthetic_folder, tmp_path, "cut"))
    assert code == 130
    assert "resume after epoch 1 with --training.resume" in error_lines(stderr)[-1]
    assert not (tmp_path / "cut" / "model.pt").exists()
    assert len(json.loads((tmp_path / "cut" / "results.json").read_text())["epochs"]) == 1

    record = train.main(run_args(synthetic_folder, tmp_path, "cut") + ["--training.resume", "auto"])
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())
    assert [e["epoch"] for e in record["epochs"]] == [1, 2, 3] and record["resumed_after_epoch"] == 1
    assert [e["lr"] for e in record["epochs"]] == [e["lr"] for e in whole["epochs"]]  # one continuous schedule
    assert record["max_lr"] == whole["max_lr"]
    resumed, uninterrupted = weights(tmp_path / "cut"), weights(tmp_path / "whole")
    assert all(torch.equal(resumed[key], uninterrupted[key]) for key in uninterrupted)


def test_resume_refuses_other_settings(synthetic_folder, tmp_path, capsys):
    args = run_args(synthetic_folder, tmp_path, "run")
    args[args.index("--training.epochs") + 1] = "1"
    train.main(args)
    with pytest.raises(SystemExit) as exit:
        train.main(args + ["--training.resume", str(tmp_path / "run"), "--training.weight_decay", "0.1"])
    assert exit.value.code == 2
    assert "training.weight_decay=0.0001 (now 0.1)" in capsys.readouterr().err


def test_resume_without_checkpoint_is_one_line(synthetic_folder, tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(run_args(synthetic_folder, tmp_path, "none") + ["--training.resume", "auto"])
    assert error_lines(capsys.readouterr().err) == [f"error: no checkpoint to resume from at "
                                                    f"{tmp_path / 'none' / 'checkpoint.pt'}"]


def test_non_finite_loss_stops_with_epoch_and_step(synthetic_folder, tmp_path, capsys):
    args = run_args(synthetic_folder, tmp_path, "diverge") + ["--lr_finder.enabled", "false", "--training.lr", "1e30"]
    with pytest.raises(SystemExit) as exit:
        train.main(args)
    assert exit.value.code == 2
    message = error_lines(capsys.readouterr().err)[-1]
    assert "non-finite at step" in message and "in epoch 1" in message
    assert not (tmp_path / "diverge" / "model.pt").exists()
