"""Writes that fail for the storage's sake keep the previous file, leave no temporary and say one line."""
import contextlib
import os
import resource
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from fast_cifar import checkpoint
from fast_cifar.errors import UserError, WriteFailed
from fast_cifar.files import atomic_path, inside, remove_stale_temporaries, write_json
from fast_cifar.plots import plt, save_figure
from fast_cifar.results import save_weights


@contextlib.contextmanager
def file_size_limit(size):
    """Writes past `size` bytes fail with EFBIG (SIGXFSZ ignored, as a full disk fails them with ENOSPC)."""
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def model_of(size):
    return torch.nn.Linear(size, 1)


def write_checkpoint(folder, size):
    model = model_of(size)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.1, total_steps=10)
    checkpoint.save(folder, 1, SimpleNamespace(model=model, optimizer=optimizer, scheduler=scheduler, average=None),
                    {"size": size, "max_lr": 0.1})


def write_plot(path, size):
    figure, axis = plt.subplots()
    side = int(size ** 0.5)
    axis.imshow(torch.rand(side, side).numpy())  # noise: a PNG that grows with `size`
    save_figure(figure, path)


WRITERS = {  # each writer of a run's files, and of dataset.json: file name -> write(folder, size)
    "results.json": lambda folder, size: write_json(folder / "results.json", {"values": list(range(size))}),
    "model.pt": lambda folder, size: save_weights(model_of(size), folder / "model.pt"),
    "checkpoint.pt": write_checkpoint,
    "loss_accuracy_plots.png": lambda folder, size: write_plot(folder / "loss_accuracy_plots.png", size),
}


@pytest.mark.parametrize("name", WRITERS)
def test_a_write_past_the_storage_limit_keeps_the_previous_file(tmp_path, name):
    WRITERS[name](tmp_path, 10)
    previous = (tmp_path / name).read_bytes()
    with file_size_limit(len(previous) + 1000), pytest.raises(WriteFailed) as error:
        WRITERS[name](tmp_path, 100_000)
    assert str(error.value) == f"cannot write {tmp_path / name}: File too large"
    assert (tmp_path / name).read_bytes() == previous
    assert sorted(path.name for path in tmp_path.iterdir()) == [name]  # no temporary left


@pytest.mark.parametrize("name", ["..", ".", "../x", "a/b", "/tmp/x", "  ", "a\\b"])
def test_names_that_leave_their_folder_are_refused(tmp_path, name):
    with pytest.raises(UserError, match="must be one plain name inside"):
        inside(tmp_path, name, "output.name")


def test_plain_names_stay_inside(tmp_path):
    assert inside(tmp_path, "run-1.seed0", "output.name") == tmp_path / "run-1.seed0"


def test_atomic_path_cleanup_never_hides_the_error(tmp_path):
    """The clean-up of a temporary that could not even be created must not raise over the real error."""
    with pytest.raises(PermissionError, match="the real error"):
        with atomic_path(tmp_path / "x.json") as temporary:
            temporary.mkdir()
            (temporary / "busy").write_text("")  # a non-empty folder: os.remove fails on it
            raise PermissionError("the real error")


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".train.beton.{dead_pid}-0123abcd.tmp"
    live = tmp_path / f".test.beton.{os.getpid()}-0123abcd.tmp"
    foreign = tmp_path / ".someone-elses.tmp"
    for path in (stale, live, foreign):
        path.write_text("")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and foreign.exists()
