"""End to end: train.py on small data, compile off and on, and every kind of bad input."""
import dataclasses
import json
import math
import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fast_cifar import train
from fast_cifar.config import declare_train_sections, parse_config, settings_of_kind
from fast_cifar.data import make_loader
from fast_cifar.lr_finder import sweep_cache_key
from fast_cifar.model import ResNet18

from helpers import REPO, TINY_RUN, FaultyLoader, error_lines, one_epoch, run_args, run_script, sigterm_at_call

# The tiny run, wide enough to learn the synthetic classes and with a sweep long enough to find a valley.
SMALL_RUN = [*TINY_RUN, "--model.width", "8", "--lr_finder.num_iters", "12", "--data.loader_threads", "2"]


@pytest.mark.slow
def test_cli_run_writes_results_plots_and_checkpoint(real_subset_folder, tmp_path):
    """A short run on real photos, through the command line as a user runs it."""
    result = run_script("fast_cifar/train.py", "--config", REPO / "rn18_configs" / "24ep.yaml", *SMALL_RUN,
                        "--model.arch", "resnet18", "--data.path", real_subset_folder, "--data.test_subset", 100,
                        "--training.epochs", 2, "--training.compile", "false", "--training.precision", "fp32",
                        "--output.profile_epoch", 2, "--output.dir", tmp_path, "--output.name", "run")
    assert result.returncode == 0, result.stderr[-3000:]
    *_, last_epoch_line, last_line = result.stdout.strip().splitlines()
    assert re.fullmatch(r"Maximum Test Accuracy: \d+\.\d\d% at Epoch: [12]", last_line)
    assert re.fullmatch(r"Last-epoch Test Accuracy: \d+\.\d\d% at Epoch: 2 \(\d+\.\d\d% with flip TTA\)",
                        last_epoch_line)

    folder = tmp_path / "run"
    record = json.loads((folder / "results.json").read_text())
    assert record["finished"] and record["config"]["training"]["epochs"] == 2
    assert {"python", "torch", "ffcv", "cuda"} <= set(record["versions"])
    assert record["device"]["type"] == "cpu"
    assert record["data"]["records"] == {"train": 1000, "test": 200}
    assert record["data"]["train_images_per_epoch"] == 1000 // 64 * 64 and record["data"]["test_images"] == 100
    assert record["model"]["receptive_fields"]  # tests/test_model.py checks the figures
    assert len(record["lr_finder"]["lrs"]) > 0 and record["max_lr"] == record["lr_finder"]["suggested_lr"]

    epochs = record["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    for epoch in epochs:
        assert {"train_loss", "train_accuracy", "test_loss", "test_accuracy", "train_seconds", "eval_seconds",
                "lr"} <= set(epoch)
        assert 0 <= epoch["test_accuracy"] <= 1 and epoch["train_seconds"] > 0
    # flip TTA, twice the evaluation's forwards, on the last epoch only: the one reported
    assert ["test_accuracy_flip_tta" in e for e in epochs] == [False, True]
    assert epochs[-1]["lr"] < record["max_lr"] / 100  # the one-cycle schedule ran to its end
    assert epochs[1]["train_loss"] < epochs[0]["train_loss"]

    timings = record["timings"]
    for key in ("data_setup", "loader_warmup", "lr_finder", "compile", "training", "evaluation", "total"):
        assert timings[key] > 0, key
    assert timings["total"] > timings["training"] + timings["evaluation"] + timings["loader_warmup"]
    assert set(timings["time_to_accuracy"]) == {"0.9", "0.93", "0.94", "0.95"}
    best = max(epochs, key=lambda e: e["test_accuracy"])
    assert record["best"] == {"test_accuracy": best["test_accuracy"], "epoch": best["epoch"]}
    assert record["last"] == {"epoch": 2, "test_accuracy": epochs[-1]["test_accuracy"],
                              "test_accuracy_flip_tta": epochs[-1]["test_accuracy_flip_tta"]}
    assert record["precision"] == {"compute": "fp32", "why": "set by training.precision"}

    assert [e["profiled"] for e in epochs] == [False, True]
    assert "aten::convolution_backward" in (folder / "profile.txt").read_text()
    assert "aten::convolution_backward" in (folder / "kernels.md").read_text()  # tests/test_results.py: the table
    for plot in ("loss_accuracy_plots.png", "lr_finder.png"):
        assert (folder / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ResNet18(width=8).load_state_dict(torch.load(folder / "model.pt"))
    assert not list(folder.glob(".*.tmp"))


def corrupt(folder):
    data = bytearray((folder / "train.beton").read_bytes())
    data[-100] ^= 0xFF
    (folder / "train.beton").write_bytes(bytes(data))


BAD_RUNS = {
    "missing data folder": (["--data.path", "{tmp}/nowhere"], "dataset.json"),
    "corrupt beton": (["--data.path", "{corrupt}"], "sha256"),
    "missing config": (["--config", "{tmp}/none.yaml"], "config file not found"),
    "unknown key": (["--training.epoch", "2"], "unrecognized arguments"),
    "zero epochs": (["--training.epochs", "0"], "training.epochs"),
    "zero batch size": (["--training.batch_size", "0"], "training.batch_size"),
    "batch larger than data": (["--training.batch_size", "100000"], "larger than"),
    "unwritable output": (["--output.dir", "{tmp}/a_file/runs"], "cannot write to output folder"),
    "run name going up": (["--output.name", "../escaped"], "output.name must be one plain name"),
    "run name with a folder": (["--output.name", "a/b"], "output.name must be one plain name"),
    "absolute run name": (["--output.name", "{tmp}/escaped"], "output.name must be one plain name"),
}


@pytest.mark.parametrize("case", BAD_RUNS)
def test_bad_input_is_one_line_and_writes_nothing(case, synthetic_folder, tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for path in synthetic_folder.iterdir():
        (damaged / path.name).write_bytes(path.read_bytes())
    corrupt(damaged)
    overrides, message = BAD_RUNS[case]
    argv = ["--data.path", str(synthetic_folder), "--output.dir", str(tmp_path / "runs")]
    argv += [arg.format(tmp=tmp_path, corrupt=damaged) for arg in overrides]
    with pytest.raises(SystemExit) as exit:
        train.main(argv)
    assert exit.value.code == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file", "damaged"]  # nothing written


@pytest.mark.slow
def test_entry_points_work_from_any_folder(tmp_path):
    """python -m fast_cifar.train and the installed console scripts, run outside the repository."""
    bin_dir = Path(sys.executable).parent
    commands = ([sys.executable, "-m", "fast_cifar.train", "--help"], [str(bin_dir / "fast-cifar-train"), "--help"],
                [str(bin_dir / "fast-cifar-write"), "--help"])
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
                 for command in commands]  # side by side: each spends seconds importing
    for command, process in zip(commands, processes):
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, (command, stderr[-2000:])
        assert "--data.path" in stdout


@pytest.mark.slow
def test_a_full_disk_mid_run_is_one_line_and_leaves_no_temporary(synthetic_folder, tmp_path):
    """Writes past 1 MB fail (EFBIG, as ENOSPC on a full disk): the first checkpoint is larger."""
    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    result = subprocess.run([sys.executable, str(REPO / "fast_cifar" / "train.py"), *SMALL_RUN, "--data.loader",
                             "device", "--data.path", synthetic_folder, "--training.epochs", "1",
                             "--training.compile", "false", "--lr_finder.enabled", "false",
                             "--output.dir", tmp_path, "--output.name", "run"],
                            preexec_fn=limit_file_size, capture_output=True, text=True, timeout=300)
    assert result.returncode == 4, result.stderr[-2000:]
    assert error_lines(result.stderr)[-1] == f"error: cannot write {tmp_path / 'run' / 'checkpoint.pt'}: File too large"
    assert sorted(path.name for path in (tmp_path / "run").iterdir()) == [".lock"]


@pytest.mark.slow
def test_the_same_seed_gives_the_same_run_on_either_loader(synthetic_folder, tmp_path):
    """Weights, data order, crops, flips, cutouts and the LR finder all follow from the seed, whichever loader
    reads; with every ingredient of the frontier study on, which must keep it so."""
    def run(name, seed, loader="ffcv"):
        record = train.main([*SMALL_RUN, "--data.path", str(synthetic_folder), "--training.epochs", "1",
                             "--data.loader", loader, "--augment.cutout", "8", "--augment.flip", "alternating",
                             "--training.norm_lr_multiplier", "4", "--training.eval_multicrop_tta", "true",
                             "--lr_finder.num_iters", "6", "--training.compile", "false", "--training.seed", str(seed),
                             "--training.deterministic", "true", "--output.checkpoint", "false",
                             "--output.dir", str(tmp_path), "--output.name", name])
        metrics = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "test_accuracy_multicrop_tta")
        return record["lr_finder"]["losses"], [[epoch[key] for key in metrics] for epoch in record["epochs"]]

    first = run("first", seed=0)
    # --output.checkpoint false: no checkpoint, but the result, model.pt, is written
    assert (tmp_path / "first" / "model.pt").is_file() and not (tmp_path / "first" / "checkpoint.pt").exists()
    # both loaders alike from one seed: so neither draws from anything but the seed (no rerun of the same one)
    assert run("device", seed=0, loader="device") == first
    other = run("other", seed=1, loader="device")
    assert other[0] != first[0] and other[1] != first[1]


@pytest.mark.slow
def test_a_compiled_run_learns_and_the_next_one_reuses_its_graphs(synthetic_folder, tmp_path):
    """Two fresh processes, one compile cache, on the device loader: the first learns the synthetic classes
    with torch.compile on, the second builds no graph the first one built."""
    # Scalar kernels: inductor's vector code is torch's to test, and skipping its CPU probe and vector headers
    # halves the cold compile; the kit's part (compile on, one cache, graphs found again) is the same.
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache"), "TORCHINDUCTOR_VEC_ISA_OK": "0"}
    records = []
    for name, epochs in (("cold", 4), ("warm", 1)):
        result = subprocess.run([sys.executable, str(REPO / "fast_cifar" / "train.py"), *SMALL_RUN, "--data.loader",
                                 "device", "--data.path", synthetic_folder, "--training.epochs", str(epochs),
                                 "--training.compile", "true", "--training.compile_mode", "default",
                                 "--lr_finder.enabled", "false", "--training.lr", "0.01", "--output.checkpoint",
                                 "false", "--output.dir", tmp_path, "--output.name", name],
                                env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        records.append(json.loads((tmp_path / name / "results.json").read_text()))
    cold, warm = (record["compile_cache"] for record in records)
    assert cold["inductor_misses"] > 0 and cold["inductor_hits"] == 0  # torch.compile really ran
    assert warm["inductor_misses"] == 0 and warm["inductor_hits"] == cold["inductor_misses"]
    assert records[0]["best"]["test_accuracy"] > 0.6  # the synthetic classes are easy to tell apart
    # the device loader has nothing to JIT-compile: its first batches cost less than a few training steps
    assert records[0]["timings"]["loader_warmup"] < 0.25 * records[0]["epochs"][0]["train_seconds"]


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["repeat", "swap"])
def test_a_loader_that_delivers_other_samples_stops_the_run(synthetic_folder, tmp_path, monkeypatch, capsys, fault):
    def faulty_test_loader(info, split, *args):
        made = make_loader(info, split, *args)
        return FaultyLoader(made, fault) if split == "test" else made

    monkeypatch.setattr(train, "make_loader", faulty_test_loader)
    with pytest.raises(SystemExit) as stop:
        train.main([*TINY_RUN, "--data.path", str(synthetic_folder), "--data.loader", "device",
                    "--output.dir", str(tmp_path), "--output.name", "run"])
    assert stop.value.code == 5
    assert re.fullmatch(r"error: epoch 1: the test split's loader delivered 200 samples where its order holds 200, "
                        r"\d+ of them not the sample the order names \(by label\)",
                        error_lines(capsys.readouterr().err)[-1])
    assert not list((tmp_path / "run").glob("*.tmp")) and not (tmp_path / "run" / "model.pt").exists()


STAGES = {"data set-up": "load_dataset_info", "loader warm-up": "first_batch", "LR finder": "find_lr",
          "compile": "warm_up", "training": "train_epoch"}


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_a_signal_at_any_stage_stops_the_run_the_same_way(synthetic_folder, tmp_path, monkeypatch, capsys, stage):
    sigterm_at_call(monkeypatch, STAGES[stage])
    # in training, on a CPU's own loader, FFCV's, whose filling thread runs as the signal lands
    loader = "ffcv" if stage == "training" else "device"
    run = [*TINY_RUN, "--data.path", str(synthetic_folder), "--data.loader", loader, "--output.dir", str(tmp_path),
           "--output.name", "run"]
    with pytest.raises(SystemExit) as stop:
        train.main(run)
    assert stop.value.code == 130
    assert error_lines(capsys.readouterr().err)[-1] == "stopped by SIGTERM: no checkpoint to resume from yet"
    left = {path.name for path in (tmp_path / "run").glob("*")} if (tmp_path / "run").exists() else set()
    assert left <= {".lock", "lr_finder.png"}, left  # no results.json, checkpoint or temporary, whole or half
    if stage == "training":  # and the folder takes a new run
        monkeypatch.undo()
        assert train.main([*run, "--output.overwrite", "true"])["finished"]


@pytest.mark.slow
def test_an_inconclusive_lr_sweep_falls_back_to_training_lr(synthetic_folder, tmp_path, monkeypatch, capsys):
    def inconclusive(*args):
        return dataclasses.replace(find_lr(*args), inconclusive="a stand-in reason")

    find_lr = train.find_lr
    monkeypatch.setattr(train, "find_lr", inconclusive)
    record = train.main([*TINY_RUN, "--data.path", str(synthetic_folder), "--data.loader", "device",
                         "--training.lr", "0.0123", "--output.dir", str(tmp_path), "--output.name", "run"])
    assert record["max_lr"] == 0.0123 and record["lr_finder"]["inconclusive"] == "a stand-in reason"
    warning = ("warning: the LR finder's sweep was inconclusive (a stand-in reason): training uses training.lr "
               "0.0123 instead; sweep more slowly or set training.lr")
    assert warning in record["warnings"] and warning in capsys.readouterr().err


@pytest.mark.slow
def test_a_run_imports_only_what_its_path_needs(synthetic_folder, tmp_path):
    # Imports cost seconds of every start that never uses them: ffcv and numba (its image field builds a numba typed
    # dict; a run on the device loader reads the .beton files with numpy), torchvision (plain PyTorch's
    # loader; it pulls in torch._dynamo) and matplotlib (imported when a plot is drawn).
    args = [*TINY_RUN, "--data.path", str(synthetic_folder), "--data.loader", "device", "--lr_finder.enabled",
            "false", "--output.dir", str(tmp_path), "--output.name", "run"]
    code = ("import sys; from fast_cifar import train; at_import = sorted(sys.modules); "
            f"train.main({args!r}); print(' '.join(at_import)); print(' '.join(sorted(sys.modules)))")
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    at_import, after_run = (set(line.split()) for line in lines.splitlines()[-2:])
    assert not at_import & {"ffcv", "torchvision", "matplotlib", "matplotlib.pyplot"}
    assert not after_run & {"ffcv", "numba", "torchvision"}  # the run drew its plots: matplotlib by then


@pytest.mark.slow
def test_the_epochs_before_the_last_can_score_a_sample_and_the_last_scores_the_whole_split(synthetic_folder,
                                                                                             tmp_path):
    record = train.main([*TINY_RUN, "--training.epochs", "3", "--data.early_test_subset", "50", "--data.loader",
                         "device", "--lr_finder.enabled", "false", "--data.path", str(synthetic_folder),
                         "--output.dir", str(tmp_path), "--output.name", "run"])
    assert [epoch["test_samples_checked"] for epoch in record["epochs"]] == [50, 50, 200]
    assert record["last"]["test_accuracy"] == record["epochs"][-1]["test_accuracy"]  # the headline: all 200


@pytest.mark.slow
def test_a_second_run_reuses_the_first_ones_lr_sweep(synthetic_folder, tmp_path):
    def run(name, *flags):
        return train.main([*TINY_RUN, "--lr_finder.num_iters", "12", "--data.path", str(synthetic_folder),
                           "--data.loader", "device", "--output.dir", str(tmp_path / "runs"), "--output.name", name,
                           *flags])

    first, again = run("first"), run("again")
    assert first["lr_finder_cached_from"] is None and again["lr_finder_cached_from"]
    assert again["lr_finder"] == first["lr_finder"] and again["epochs"][0]["test_accuracy"] == \
        first["epochs"][0]["test_accuracy"]
    assert again["timings"]["lr_finder"] < 0.1 * first["timings"]["lr_finder"]
    assert run("off", "--lr_finder.cache", "false")["lr_finder_cached_from"] is None


SWEEP_RECORD = SimpleNamespace(data={"data": {"sha256": {"train": "the data"}}, "device": {"name": "a CPU"},
                                     "versions": {"torch": "2.14.1"}})
SWEEP_COMPUTE = SimpleNamespace(loader="ffcv", precision="bf16", channels_last=True)


@pytest.mark.parametrize("name", sorted(settings_of_kind("sweep", "training", "speed", "place", "report")))
def test_the_sweep_key_changes_with_the_settings_it_trains_with_and_only_those(name):
    cfg = parse_config(declare_train_sections, [])
    key = sweep_cache_key(train.sweep_inputs(cfg, SWEEP_COMPUTE, SWEEP_RECORD))
    section, setting = name.split(".")
    setattr(getattr(cfg, section), setting, "another value")
    changed = sweep_cache_key(train.sweep_inputs(cfg, SWEEP_COMPUTE, SWEEP_RECORD)) != key
    assert changed == (name in settings_of_kind("sweep")), name


def test_the_sweep_key_changes_with_the_data_the_device_and_the_versions():
    cfg = parse_config(declare_train_sections, [])
    key = sweep_cache_key(train.sweep_inputs(cfg, SWEEP_COMPUTE, SWEEP_RECORD))
    for part, value in (("data", {"sha256": {"train": "other data"}}), ("device", {"name": "a GPU"}),
                        ("versions", {"torch": "2.15"})):
        record = SimpleNamespace(data=SWEEP_RECORD.data | {part: value})
        assert sweep_cache_key(train.sweep_inputs(cfg, SWEEP_COMPUTE, record)) != key, part


@pytest.mark.slow
def test_non_finite_loss_stops_with_epoch_and_step(synthetic_folder, tmp_path, capsys):
    args = run_args(synthetic_folder, tmp_path, "diverge") + ["--lr_finder.enabled", "false", "--training.lr", "1e30"]
    with pytest.raises(SystemExit) as exit:
        train.main(args)
    assert exit.value.code == 3  # diverged: not the bad-input code
    message = error_lines(capsys.readouterr().err)[-1]
    assert "non-finite at step" in message and "in epoch 1" in message
    assert not (tmp_path / "diverge" / "model.pt").exists()


@pytest.mark.slow
def test_an_exploding_but_finite_loss_is_warned_about(synthetic_folder, tmp_path, capsys):
    # Adam with L2 decay at LR 1e4: the loss blows up but stays finite for an epoch (AdamW's decoupled
    # decay, multiplied by the LR, would drive it to NaN at once).
    args = one_epoch(synthetic_folder, tmp_path, "explode") + ["--lr_finder.enabled", "false", "--training.lr", "1e4",
                                                               "--training.optimizer", "adam"]
    record = train.main(args)
    warning = capsys.readouterr().err
    assert "warning: the training loss in epoch 1 is" in warning and "blown up" in warning
    assert record["warnings"] and math.isfinite(record["epochs"][0]["train_loss"])
