"""The run record, results.json: config, versions, device, per-epoch metrics, timings; and the weights.

results.json has a declared shape (`RECORD_SHAPE`, version `RECORD_VERSION`). `RunRecord` writes every
key of it, None until the run knows it, and rewrites the file after every epoch (`"finished": false`
until the end), each time atomically, so a crash leaves the last complete record, never a torn one.
`read_run` reads it back, refusing in one line a file of another shape: no reader has to guess.

torch is imported only where a run is measured, so the scripts that only read records (sweep.py, compare.py)
start without its second of import.
"""
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

from fast_cifar.errors import UserError
from fast_cifar.files import atomic_file, write_json, write_text
from fast_cifar.report import TTA_KEYS, markdown_table

PACKAGES = ("torch", "torchvision", "ffcv", "numpy", "numba", "fastargs")

RECORD_VERSION = 1  # raised whenever RECORD_SHAPE changes
NUMBER = (int, float)
# Every key of results.json, with the type it holds once the run knows it (None before). The first nine are
# known from the start, those of KNOWN_WHEN_FINISHED once the run has finished.
RECORD_SHAPE = {
    "record_version": int, "finished": bool, "command": str, "started_at": str, "config": dict, "versions": dict,
    "device": dict, "timings": dict, "epochs": list,
    "data": dict,  # where the images came from; train_images_per_epoch
    "model": dict,  # architecture, parameters, FLOPs per image, receptive fields
    "loader": str, "precision": dict, "channels_last": dict, "onednn": bool, "optimizer": str, "tta": str,
    "max_lr": NUMBER, "lr_finder": dict, "lr_finder_cached_from": str, "compile_cache": dict,
    "resumed_after_epoch": int, "hardware_use": dict, "warnings": list, "best": dict, "last": dict,
}
ALWAYS_KNOWN = tuple(RECORD_SHAPE)[:9]
KNOWN_WHEN_FINISHED = ("data", "model", "best", "last")
# What every epoch holds (airbench94 counts 9.9 epochs); train.py's hold losses, the LR and the sample checks too.
EPOCH_SHAPE = {"epoch": NUMBER, "test_accuracy": NUMBER, "train_seconds": NUMBER, "eval_seconds": NUMBER,
               "elapsed_seconds": NUMBER}


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
            import torch

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
        self.data = dict.fromkeys(RECORD_SHAPE) | {
            "record_version": RECORD_VERSION,
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
        self.data["warnings"] = [*(self.data["warnings"] or []), message]
        if self.writes:
            print(message, file=sys.stderr)

    def save(self, finished=False):
        if not self.writes:
            return
        self.data["finished"] = finished
        self.timings["total"] = round(time.perf_counter() - self.started, 4)
        age = process_age()
        self.timings["end_to_end"] = round(age, 3) if age is not None else None
        if problem := shape_problem(self.data):  # a writer's bug: never publish a record readers would refuse
            raise ValueError(f"results.json would not have its declared shape: {problem}")
        write_json(self.folder / "results.json", self.data)


def shape_problem(record):
    """What keeps `record` from being a results.json of RECORD_SHAPE, in a few words; None if nothing."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if record.get("record_version") != RECORD_VERSION:
        return f"record_version {record.get('record_version')}, where this kit reads {RECORD_VERSION}"
    if unknown := sorted(set(record) - set(RECORD_SHAPE)):
        return f"keys outside its shape: {', '.join(unknown)}"
    for key, kind in RECORD_SHAPE.items():
        if key not in record:
            return f"no {key}"
        if not isinstance(record[key], kind) and (record[key] is not None or key in ALWAYS_KNOWN):
            return f"{key} holds a {type(record[key]).__name__}"
    if not record["epochs"]:
        return "no epoch"  # a run saves its record after each epoch
    for epoch in record["epochs"]:
        if not isinstance(epoch, dict) or not all(isinstance(epoch.get(k), kind) for k, kind in EPOCH_SHAPE.items()):
            return f"an epoch without {', '.join(EPOCH_SHAPE)}"
    if record["finished"] and not all(record[key] for key in KNOWN_WHEN_FINISHED):
        return f"finished, without {', '.join(KNOWN_WHEN_FINISHED)}"
    return None


def read_run(folder):
    """A run folder's results.json, checked against RECORD_SHAPE: one line if it is not such a record."""
    path = Path(folder) / "results.json"
    if not path.is_file():
        raise UserError(f"{folder} holds no results.json: give run folders made by fast_cifar/train.py")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid JSON ({error})") from None
    if problem := shape_problem(record):
        raise UserError(f"{path} is not a run record of this kit ({problem}): give run folders made by "
                        f"fast_cifar/train.py")
    return record


def finished_run(folder):
    """The record of a finished run in `folder`, or None (no run, or one cut off)."""
    try:
        record = read_run(folder)
    except UserError:
        return None
    return record if record["finished"] else None


def process_age(stat=Path("/proc/self/stat"), uptime=Path("/proc/uptime")):
    """Seconds since this process started, the interpreter's start and the imports included (Linux; None
    elsewhere)."""
    try:
        start_ticks = int(stat.read_text().rsplit(")", 1)[1].split()[19])  # field 22, counted after the name
        return float(uptime.read_text().split()[0]) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def versions():
    import torch

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
    import torch

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
    import torch

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
    import torch

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
    import torch

    with atomic_file(path) as file:
        torch.save(model.state_dict(), file)
