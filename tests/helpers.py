"""What several tests share besides fixtures: where the project is, and how to run its scripts."""
import contextlib
import importlib.util
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from fast_cifar import train
from fast_cifar.results import RECORD_SHAPE, RECORD_VERSION

REPO = Path(__file__).resolve().parents[1]
# train.py's flags for a run of seconds on the CPU: tiny width, one epoch, no compile, a short LR finder, and
# ResNet-9, which runs every code path of a run at half ResNet-18's cost per step (the tests of the recipe's
# own network, tests/test_model.py and the command-line run, name resnet18).
TINY_RUN = ["--model.arch", "resnet9", "--model.width", "4", "--training.batch_size", "64",
            "--training.test_batch_size", "100",
            "--training.epochs", "1", "--training.compile", "false", "--training.precision", "fp32",
            "--lr_finder.num_iters", "5"]
# A CIFAR-10 copy (an archive or folder write_datasets.py accepts) for the tests that need real images.
OFFLINE_COPY = Path(os.environ["FAST_CIFAR_COPY"]) if os.environ.get("FAST_CIFAR_COPY") else None


def record_of_shape(**fields):
    """A results.json of the declared shape: `fields` set, every other key None."""
    return dict.fromkeys(RECORD_SHAPE) | {"record_version": RECORD_VERSION} | fields


def run_script(script, *args, cwd=REPO):
    """Run one of the project's command-line scripts the way a user does."""
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.strip()]


def load_script(script):
    """One of the project's scripts as a module, imported from its file (with its folder on the path, as
    `python script` has it)."""
    spec = importlib.util.spec_from_file_location(f"script_{Path(script).stem}", REPO / script)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str((REPO / script).parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str((REPO / script).parent))
    return module


def run_main(script, *args, interrupt_in=None):
    """A script's main(argv) called in this process, which has paid for the imports already; its exit code
    and output as run_script gives them. For scripts whose behaviour does not depend on a fresh process.
    `interrupt_in` names one of the script's functions: the process gets SIGINT as that function starts,
    as a user's Ctrl-C would mid-work."""
    module = load_script(script)
    if interrupt_in:
        step = getattr(module, interrupt_in)

        def interrupted(*step_args, **step_kwargs):
            os.kill(os.getpid(), signal.SIGINT)
            return step(*step_args, **step_kwargs)

        setattr(module, interrupt_in, interrupted)
    stdout, stderr, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            module.main([str(arg) for arg in args])
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
    return subprocess.CompletedProcess([script, *args], code, stdout.getvalue(), stderr.getvalue())


def all_batches(loader):
    """Every batch of one pass, concatenated: (images, labels)."""
    images, labels = zip(*[(x.clone(), y.clone()) for x, y in loader])
    return torch.cat(images), torch.cat(labels)


class RunsCode:
    """A pickled object that runs a command when unpickled by plain `pickle.loads` or
    `torch.load(weights_only=False)`: what a crafted file would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class FaultyLoader:
    """A loader whose pass has one fault: `repeat` delivers batch 0 again in place of batch 1, `swap` swaps
    two different labels of batch 0. Everything else is the wrapped loader's."""

    def __init__(self, loader, fault):
        self.loader, self.fault = loader, fault

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        batches = [(images, labels.clone()) for images, labels in self.loader]
        if self.fault == "repeat":
            batches[1] = batches[0]
        else:
            labels = batches[0][1]
            other = int((labels != labels[0]).nonzero()[0])
            labels[[0, other]] = labels[[other, 0]]
        yield from batches


def run_args(data, out, name):
    # Deterministic mode pins the kernels: the run is repeatable bit for bit.
    return [*TINY_RUN, "--data.path", str(data), "--data.loader", "device",
            "--training.epochs", "3", "--lr_finder.num_iters", "8", "--training.deterministic", "true",
            "--output.dir", str(out), "--output.name", name]


def one_epoch(data, out, name):
    return run_args(data, out, name) + ["--training.epochs", "1"]  # the last value of a flag wins


def sigterm_at_call(patch, name, number=1):
    """train.<name> sends this process SIGTERM as its `number`th call starts: a stop at that point of a run."""
    step, calls = getattr(train, name), []

    def signalled(*args, **kwargs):
        calls.append(name)
        if len(calls) == number:
            os.kill(os.getpid(), signal.SIGTERM)
        return step(*args, **kwargs)

    patch.setattr(train, name, signalled)


def wait_until(condition, seconds):
    """Poll `condition` until it holds or `seconds` pass; its last value."""
    deadline = time.monotonic() + seconds
    while not (met := condition()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return met
