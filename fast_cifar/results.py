"""The run record, results.json: config, versions, device, per-epoch metrics, timings; and the weights.

results.json is rewritten after every epoch (`"finished": false` until the end),
each time atomically, so a crash leaves the last complete record, never a torn one.
"""
import contextlib
import datetime
import importlib.metadata
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

from fast_cifar.files import atomic_file, write_json, write_text
from fast_cifar.report import TTA_KEYS, markdown_table

PACKAGES = ("torch", "torchvision", "ffcv", "numpy", "numba", "fastargs")


# Every stage results.json's `timings` holds, in the order a run goes through them, with what it covers:
# every report (compare.py, sweep.py, fill_readme.py) takes its rows from here.
STAGES = {
    "data_setup": "data set-up: check the .beton files, build the loaders",
    "loader_warmup": "the loaders' first batches (FFCV JIT-compiles its pipelines)",
    "lr_finder": "LR finder",
    "compile": "warm-up: one step and eval forwards (torch.compile, when on)",
    "training": "training",
    "evaluation": "evaluation, every epoch",
    "total": "total wall-clock, data checks to results.json",
    "end_to_end": "end to end, process start to results.json",
}
STARTUP_STAGES = ("data_setup", "loader_warmup", "lr_finder", "compile")  # those before the first training step

# Dense bf16 tensor-core peaks (TFLOP/s, without sparsity) from the vendors' data sheets, by the part's
# name as whole words of the name torch reports (an L4 is not an L40); the first match wins, so more
# specific names come first.
BF16_PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4), ("GH200", 989.4),
                    ("A100", 312.0), ("L40S", 362.1), ("L4", 121.0), ("A10G", 70.0))


def bf16_peak_tflops(device_name):
    """The device's dense bf16 peak, or None where it is not in the table (every CPU among them)."""
    return next((peak for part, peak in BF16_PEAK_TFLOPS
                 if re.search(rf"(?<![\w]){re.escape(part)}(?![\w])", device_name)), None)


def hardware_use(flops_per_image, images, seconds, device):
    """Training's achieved TFLOP/s and its share of the device's bf16 peak (MFU), where that is known."""
    achieved = flops_per_image * images / seconds / 1e12 if seconds else None
    peak = bf16_peak_tflops(device["name"]) if device["type"] == "cuda" else None
    return {"flops_per_image": flops_per_image, "achieved_tflops": achieved and round(achieved, 3),
            "bf16_peak_tflops": peak, "mfu": round(achieved / peak, 4) if achieved and peak else None,
            "mfu_note": None if peak else f"unknown: no bf16 peak on record for {device['name']}"}


class Timer:
    """`with Timer(device) as timer: ...` then `timer.seconds`; waits for queued GPU work at both ends.
    Full precision: a fast block on a small test set can take microseconds, and rates divide by it."""

    def __init__(self, device):
        self.device = device
        self.seconds = None

    def _synchronize(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __enter__(self):
        self._synchronize()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exception):
        self._synchronize()
        self.seconds = time.perf_counter() - self.start

    @property
    def recorded(self):
        """The seconds as results.json keeps them: to 0.1 ms."""
        return round(self.seconds, 4)


class RunRecord:
    """A run's results.json in the making. `lock`: the run folder's lock file, held open while the run lasts
    (closed on leaving the `with` block); `started`: when the run began (perf_counter; default now), from
    which end-to-end times count; `writes`: False on the processes that neither write nor print."""

    def __init__(self, folder, config, device, argv, *, lock=None, started=None, writes=True):
        self.folder = Path(folder) if folder else None
        self.writes = writes  # with several processes, only rank 0 writes and prints
        self.device = device
        self.started = time.perf_counter() if started is None else started
        self.checkpointed_epoch = None  # the epoch checkpoint.pt on disk holds
        self.lock = lock
        self.data = {
            "finished": False,
            "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
            "started_at": datetime.datetime.now().isoformat(timespec="seconds"),
            "config": config,
            "versions": versions(),
            "device": describe_device(device),
            "timings": {},
            "epochs": [],
        }

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        if self.lock:
            self.lock.close()  # releases the run folder for a later run or resume

    @property
    def timings(self):
        return self.data["timings"]

    @contextlib.contextmanager
    def timed(self, name):
        """Time a block into timings[name]."""
        with Timer(self.device) as timer:
            yield
        self.timings[name] = timer.recorded

    def mark_first_step(self):
        """timings.startup: where the time from the process's start to the first training step went."""
        age, since_data = process_age(), time.perf_counter() - self.started
        stages = {stage: self.timings.get(stage, 0.0) for stage in STARTUP_STAGES}
        self.timings["startup"] = {
            "interpreter_and_imports": round(age - since_data, 3) if age is not None else None,
            **stages, "other": round(since_data - sum(stages.values()), 3),
            "total": round(age, 3) if age is not None else None}

    def add_epoch(self, **metrics):
        """One epoch's metrics, with the wall-clock since the run started (data set-up, JIT, finder included)."""
        self.data["epochs"].append({**metrics, "elapsed_seconds": round(time.perf_counter() - self.started, 3)})

    def summarize(self, accuracy_targets):
        epochs = self.data["epochs"]
        best = max(epochs, key=lambda e: e["test_accuracy"])
        elapsed, reached, reached_end_to_end = 0.0, {}, {}
        for epoch in epochs:  # time-to-accuracy counts training and evaluation, not set-up
            elapsed += epoch["train_seconds"] + epoch["eval_seconds"]
            for target in accuracy_targets:
                if epoch["test_accuracy"] >= target and str(target) not in reached:
                    reached[str(target)] = round(elapsed, 3)
                    reached_end_to_end[str(target)] = epoch.get("elapsed_seconds")
        self.timings["training"] = round(sum(e["train_seconds"] for e in epochs), 4)
        self.timings["evaluation"] = round(sum(e["eval_seconds"] for e in epochs), 4)
        self.timings["time_to_accuracy"] = {str(t): reached.get(str(t)) for t in accuracy_targets}
        # As a user waiting for the result sees it: from the run's start, set-up, JIT, finder and compile included.
        self.timings["time_to_accuracy_end_to_end"] = {str(t): reached_end_to_end.get(str(t))
                                                       for t in accuracy_targets}
        self.data["best"] = {"test_accuracy": best["test_accuracy"], "epoch": best["epoch"]}
        # The honest headline: picking the best epoch by the test set flatters the result.
        last = epochs[-1]
        self.data["last"] = {key: last[key] for key in ("epoch", "test_accuracy", *TTA_KEYS) if key in last}
        return self.data["best"]

    def say(self, message):
        if self.writes:
            print(message)

    def warn(self, message):
        """A warning on stderr, kept in results.json's `warnings`."""
        self.data.setdefault("warnings", []).append(message)
        if self.writes:
            print(message, file=sys.stderr)

    def save(self, finished=False):
        if not self.writes:
            return
        self.data["finished"] = finished
        self.timings["total"] = round(time.perf_counter() - self.started, 4)
        age = process_age()
        self.timings["end_to_end"] = round(age, 3) if age is not None else None
        write_json(self.folder / "results.json", self.data)


def process_age(stat=Path("/proc/self/stat"), uptime=Path("/proc/uptime")):
    """Seconds since this process started, the interpreter's start and the imports included (Linux; None
    elsewhere)."""
    try:
        start_ticks = int(stat.read_text().rsplit(")", 1)[1].split()[19])  # field 22, counted after the name
        return float(uptime.read_text().split()[0]) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def versions():
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    found["cuda"] = torch.version.cuda
    found["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return found


def source_commit(tree=Path(__file__).resolve().parent.parent):
    """The commit the kit's files are at, "+changes" where tracked files differ from it; None outside git."""
    def git(*args):
        try:
            return subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True).stdout.strip()
        except OSError:  # no git
            return ""
    head = git("rev-parse", "--short", "HEAD")
    return head + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "") if head else None


def describe_device(device):
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        return {"type": "cuda", "name": properties.name, "memory_gib": round(properties.total_memory / 2**30, 1),
                "capability": f"{properties.major}.{properties.minor}", "count": torch.cuda.device_count()}
    return {"type": "cpu", "name": platform.processor() or platform.machine(), "model": cpu_model(),
            "capability": torch.backends.cpu.get_cpu_capability(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}


def cpu_model():
    """The CPU's marketing name as Linux reports it (None elsewhere): "x86_64" alone says little."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


@contextlib.contextmanager
def profiled(enabled, folder, device):
    """torch.profiler over the block: its top operators written to profile.txt and its top 20 kernels by GPU
    time (by their own CPU time on a CPU) to kernels.md, where the time goes, kernel by kernel."""
    if not enabled:
        yield
        return
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        yield
    events = profiler.key_averages()
    sort_by = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    write_text(folder / "profile.txt", events.table(sort_by=sort_by, row_limit=40) + "\n")
    write_text(folder / "kernels.md", top_kernels(events, device))


def top_kernels(events, device, count=20):
    """The `count` costliest GPU kernels by their total GPU time, as a Markdown table with each one's share;
    on a CPU, the costliest operators by their own CPU time."""
    on_gpu = device.type == "cuda"
    own_time = (lambda e: e.self_device_time_total) if on_gpu else (lambda e: e.self_cpu_time_total)
    kernels = [e for e in events if (e.device_type == torch.autograd.DeviceType.CUDA) == on_gpu and own_time(e) > 0]
    total = sum(map(own_time, kernels)) or 1
    rows = [[rank, f"`{e.key[:90]}`", e.count, f"{own_time(e) / 1e3:.2f}", f"{100 * own_time(e) / total:.1f}"]
            for rank, e in enumerate(sorted(kernels, key=own_time, reverse=True)[:count], start=1)]
    what = "GPU kernels, by GPU time" if on_gpu else "CPU operators, by their own CPU time (no GPU)"
    header = ["", "kernel" if on_gpu else "operator", "calls", "total (ms)", "share (%)"]
    return f"Top {count} {what}, over one profiled epoch ({total / 1e3:.1f} ms in all):\n\n" + \
        markdown_table(header, rows, left=(1,))


def save_weights(model, path):
    """model.pt: the final state_dict alone, loadable with torch.load(weights_only=True)."""
    with atomic_file(path) as file:
        torch.save(model.state_dict(), file)
