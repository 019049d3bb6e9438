"""Interruption and resumption: a stopped run continues to the same weights as an uninterrupted one."""
import contextlib
import copy
import json
import re
from pathlib import Path

import pytest
import torch

from fast_cifar import checkpoint, files, plots, train
from fast_cifar.beton import write_dataset
from fast_cifar.config import as_dict, declare_train_sections, parse_config, settings_of_kind
from fast_cifar.errors import UserError
from fast_cifar.report import FIGURES
from fast_cifar.sources import make_synthetic

from helpers import RunsCode, error_lines, one_epoch, run_args, sigterm_at_call

pytestmark = pytest.mark.slow  # every test trains, some several times


def weights(folder):
    return torch.load(folder / "model.pt")


def test_interrupted_run_resumes_to_the_same_weights(synthetic_folder, tmp_path, monkeypatch, capsys):
    # With a moving average of the weights from epoch 2, which the checkpoint must carry too.
    average = ["--training.ema_decay", "0.8", "--training.ema_start_epoch", "2"]
    train.main(run_args(synthetic_folder, tmp_path, "whole") + average)
    saved = torch.load(tmp_path / "whole" / "checkpoint.pt")
    result = weights(tmp_path / "whole")  # model.pt is the average, the model evaluated, not the last weights
    assert all(torch.equal(result[key], saved["average"][key]) for key in result)
    assert not all(torch.equal(result[key], saved["model"][key]) for key in result)

    with monkeypatch.context() as patch, pytest.raises(SystemExit) as stop:
        sigterm_at_call(patch, "train_epoch", 2)  # as epoch 2 starts
        train.main(run_args(synthetic_folder, tmp_path, "cut") + average)
    assert stop.value.code == 130
    assert "resume after epoch 1 with --training.resume" in error_lines(capsys.readouterr().err)[-1]
    assert not (tmp_path / "cut" / "model.pt").exists()
    assert len(json.loads((tmp_path / "cut" / "results.json").read_text())["epochs"]) == 1

    record = train.main(run_args(synthetic_folder, tmp_path, "cut") + average + ["--training.resume", "auto"])
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())
    assert [e["epoch"] for e in record["epochs"]] == [1, 2, 3] and record["resumed_after_epoch"] == 1
    assert [e["lr"] for e in record["epochs"]] == [e["lr"] for e in whole["epochs"]]  # one continuous schedule
    assert record["max_lr"] == whole["max_lr"]
    resumed, uninterrupted = weights(tmp_path / "cut"), weights(tmp_path / "whole")
    assert all(torch.equal(resumed[key], uninterrupted[key]) for key in uninterrupted)
    # one training images/s, over every epoch, the one before the cut too, for the reports and the FLOP/s
    images_per_second = FIGURES["training images/s"](record)
    assert images_per_second == record["data"]["train_images_per_epoch"] * 3 / sum(e["train_seconds"]
                                                                                    for e in record["epochs"])
    flops = record["hardware_use"]["flops_per_image"]
    assert record["hardware_use"]["achieved_tflops"] == pytest.approx(flops * images_per_second / 1e12, abs=1e-3)


def test_resume_refuses_other_settings(synthetic_folder, tmp_path, capsys):
    args = one_epoch(synthetic_folder, tmp_path, "run")
    train.main(args)
    with pytest.raises(SystemExit) as exit:
        train.main(args + ["--training.resume", str(tmp_path / "run"), "--training.weight_decay", "0.1"])
    assert exit.value.code == 2
    assert "training.weight_decay=0.2 (now 0.1)" in capsys.readouterr().err


RECIPE = as_dict(parse_config(declare_train_sections, []))


def with_one_change(name):
    config = copy.deepcopy(RECIPE)
    section, key = name.split(".")
    config[section][key] = "another value"
    return config


@pytest.mark.parametrize("name", sorted(settings_of_kind("sweep", "training")))
def test_a_resume_with_any_setting_that_shapes_the_run_changed_is_refused(tmp_path, name):
    torch.save({"record": {"config": RECIPE, "data": {"sha256": "the data"}}}, tmp_path / "checkpoint.pt")
    with pytest.raises(UserError, match=re.escape(name)) as refused:
        checkpoint.load(tmp_path / "checkpoint.pt", with_one_change(name), "the data")
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("name", sorted(settings_of_kind("speed", "place", "report")))
def test_a_resume_may_change_how_fast_where_and_what_is_reported(tmp_path, name):
    torch.save({"record": {"config": RECIPE, "data": {"sha256": "the data"}}}, tmp_path / "checkpoint.pt")
    assert checkpoint.load(tmp_path / "checkpoint.pt", with_one_change(name), "the data")["record"]


def test_resume_without_checkpoint_is_one_line(synthetic_folder, tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(run_args(synthetic_folder, tmp_path, "none") + ["--training.resume", "auto"])
    assert error_lines(capsys.readouterr().err) == [f"error: no checkpoint to resume from at "
                                                    f"{tmp_path / 'none' / 'checkpoint.pt'}"]


def test_a_checkpoint_that_would_run_code_is_refused(synthetic_folder, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    planted = tmp_path / "runs" / "planted" / "checkpoint.pt"
    planted.parent.mkdir(parents=True)
    torch.save({"epoch": 1, "record": RunsCode(marker)}, planted)
    with pytest.raises(SystemExit) as exit:
        train.main(run_args(synthetic_folder, tmp_path / "runs", "mine") + ["--training.resume", str(planted)])
    assert exit.value.code == 2
    assert error_lines(capsys.readouterr().err) == [
        f"error: checkpoint {planted} holds objects other than tensors and plain values, "
        "which could run code when loaded: refusing to load it"]
    assert not marker.exists()


def test_resume_refuses_another_data_set(synthetic_folder, tmp_path, capsys):
    other = tmp_path / "other_data"
    write_dataset(make_synthetic(512, 100, seed=1), other, "synthetic", num_workers=1)
    train.main(one_epoch(synthetic_folder, tmp_path, "run"))  # in this process: its checkpoint is what counts
    with pytest.raises(SystemExit):
        train.main(one_epoch(other, tmp_path, "run") + ["--training.resume", "auto"])
    assert "was made on another data set" in error_lines(capsys.readouterr().err)[-1]


def test_resuming_a_finished_run_leaves_it_alone(synthetic_folder, tmp_path, capsys):
    train.main(one_epoch(synthetic_folder, tmp_path, "done"))
    folder = tmp_path / "done"
    before = {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}
    assert train.main(one_epoch(synthetic_folder, tmp_path, "done") + ["--training.resume", "auto"]) is None
    assert "nothing left to do" in capsys.readouterr().out
    assert {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()} == before


class Killed(BaseException):
    """A kill -9 in the middle of a run, as far as its files can tell: nothing after it runs."""


def kill_after_write(count, monkeypatch):
    """Make the run's `count`-th file write (every write goes through files.atomic_path) its last act."""
    real, writes = files.atomic_path, []

    @contextlib.contextmanager
    def counted(path):
        with real(path) as temporary:
            yield temporary
        writes.append(Path(path).name)
        if len(writes) == count:
            raise Killed(path)

    monkeypatch.setattr(files, "atomic_path", counted)
    monkeypatch.setattr(plots, "atomic_path", counted)
    return writes


def metrics(record):
    return [{key: value for key, value in epoch.items() if not key.endswith("seconds")} for epoch in record["epochs"]]


def test_a_run_killed_after_any_write_is_finished_by_its_resume_or_refused(synthetic_folder, tmp_path, monkeypatch,
                                                                           capsys):
    # 16 runs: 5 sweep steps and 4 steps an epoch each
    args = [*run_args(synthetic_folder, tmp_path, "whole"), "--training.epochs", "2", "--lr_finder.cache", "false",
            "--lr_finder.num_iters", "5", "--data.train_subset", "256"]
    with monkeypatch.context() as patch:
        writes = kill_after_write(0, patch)
        whole = train.main(args)
    # the sweep's plot, each epoch's checkpoint and record, then the weights, the plots and the finished record
    assert writes == ["lr_finder.png", *["checkpoint.pt", "results.json"] * 2, "model.pt", "loss_accuracy_plots.png",
                      "results.json"]
    for count, write in enumerate(writes, start=1):
        name = f"killed_after_{count}_{write}"
        with monkeypatch.context() as patch:
            kill_after_write(count, patch)
            with pytest.raises(Killed):
                train.main([*args, "--output.name", name])
        folder = tmp_path / name
        if not (folder / "checkpoint.pt").exists():  # killed before its first epoch ended: nothing to resume
            with pytest.raises(SystemExit) as refused:
                train.main([*args, "--output.name", name, "--training.resume", "auto"])
            assert refused.value.code == 2 and "no checkpoint to resume from" in error_lines(capsys.readouterr().err)[-1]
            continue
        train.main([*args, "--output.name", name, "--training.resume", "auto"])
        record = json.loads((folder / "results.json").read_text())
        assert record["finished"] and metrics(record) == metrics(whole)
        assert record["last"] == whole["last"] and record["max_lr"] == whole["max_lr"]
        assert all(torch.equal(weights(folder)[key], value) for key, value in weights(tmp_path / "whole").items())
        assert (folder / "loss_accuracy_plots.png").is_file() and not list(folder.glob(".*.tmp"))


