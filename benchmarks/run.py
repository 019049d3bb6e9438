"""What each ingredient buys: loaders, precision, memory format and torch.compile, against plain PyTorch.

    python benchmarks/run.py                     # CPU mode without a GPU (minutes), GPU mode with one
    python benchmarks/run.py --bench.mode cpu --bench.out benchmarks/results/bench_cpu

Everything is measured in one process, one row after another, so ratios compare
like with like. Loader rows: images/s of the loader alone over the train split
with crop and flip, after its first batch (FFCV's JIT, worker start-up), which is
timed apart; `ffcv_async_copy` is FFCV's loader with the asynchronous transfer that can hand out overwritten
batches on a GPU (data.py's image_pipeline), kept to price the wait that replaced it. Training rows: the recipe
with one ingredient changed, and the
baseline (torchvision DataLoader, fp32, contiguous, eager); images/s over timed
steps after warm-up steps (which include compilation), the epoch time that rate
implies for 50,000 images, peak GPU memory, and the speed-up over the baseline.
Writes results.json, table.md, loaders.png and training.png into --bench.out.
"""
import contextlib
import datetime
import os
import sys
from pathlib import Path

import torch
from fastargs import Param, Section
from fastargs.validation import OneOf

from fast_cifar.config import NON_NEGATIVE_INT, declare_train_sections, parse_config
from fast_cifar.beton import load_dataset_info, read_split
from fast_cifar.data import Batches, Sampling, make_loader
from fast_cifar.errors import exit_on_user_error
from fast_cifar.files import write_json, write_text
from fast_cifar.model import ResNet18
from fast_cifar.optim import make_optimizer, make_scheduler
from fast_cifar.plots import plt, save_figure
from fast_cifar.report import markdown_table, published_command, source_name
from fast_cifar.results import Timer, describe_device, versions
from fast_cifar.train import endless, onednn_is_safe, pick_memory_format, train_step
from plain_pytorch import make_torchvision_loader  # benchmarks/, beside this script

EPOCH_IMAGES = 50_000
MODES = {  # sizes that finish in minutes on 2 CPU cores, and the real thing on a GPU
    "cpu": dict(width=16, batch_size=64, loader_batch_size=512, loader_images=100_000, warmup_steps=3, timed_steps=40),
    "gpu": dict(width=64, batch_size=512, loader_batch_size=512, loader_images=200_000, warmup_steps=15,
                timed_steps=100),
}
BASELINE = dict(loader="torchvision", precision="fp32", channels_last=False, compile="off")
RECIPES = {  # what train.py runs: on a CPU in fp32 and eager, as in cpu_small.yaml
    "cpu": dict(loader="ffcv", precision="fp32", channels_last=True, compile="off"),
    "gpu": dict(loader="ffcv", precision="bf16", channels_last=True, compile="reduce-overhead"),
}
CHANGES = {
    "cpu": [("loader", "torchvision"), ("loader", "device"), ("channels_last", False), ("precision", "bf16"),
            ("compile", "default")],
    "gpu": [("loader", "torchvision"), ("loader", "device"), ("channels_last", False), ("precision", "fp32"),
            ("compile", "off"), ("compile", "default"), ("compile", "max-autotune")],
}
LOADERS = ("torchvision", "ffcv", "ffcv_async_copy", "device")


def declare_sections(config):
    Section("bench", "What to measure and where to write it", config_descriptor=config).params(
        mode=Param(OneOf(["auto", "cpu", "gpu"]), "auto: gpu when torch sees one", default="auto"),
        rows=Param(OneOf(["all", "loaders"]), "all, or the loader rows alone", default="all"),
        data=Param(str, "folder with the .beton files", default="data/cifar10"),
        out=Param(str, "results folder (default benchmarks/results/bench_<mode>)", default=""),
        width=Param(NON_NEGATIVE_INT, "model width (0: the mode's)", default=0),
        batch_size=Param(NON_NEGATIVE_INT, "training batch size (0: the mode's)", default=0),
        loader_batch_size=Param(NON_NEGATIVE_INT, "batch size of the loader rows (0: the mode's)", default=0),
        loader_images=Param(NON_NEGATIVE_INT, "images per loader measurement (0: the mode's)", default=0),
        warmup_steps=Param(NON_NEGATIVE_INT, "untimed steps per training row (0: the mode's)", default=0),
        timed_steps=Param(NON_NEGATIVE_INT, "timed steps per training row (0: the mode's)", default=0),
        workers=Param(NON_NEGATIVE_INT, "DataLoader workers and FFCV threads (0: all cores)", default=0),
    )


def to_device(batches, device, dtype, channels_last):
    """Move DataLoader batches to the device in the layout and dtype the model takes."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for images, labels in batches:
        images = images.to(device, non_blocking=True).to(dtype=dtype, memory_format=memory_format)
        yield images, labels.to(device, non_blocking=True)


class Loaders:
    """Each loader built once and its first batch timed apart, so that rows time the steady state."""

    def __init__(self, info, train_arrays, batch_size, device, workers):
        self.info, self.arrays, self.batch_size = info, train_arrays, batch_size
        self.device, self.workers = device, workers
        self.streams, self.first_batch_seconds = {}, {}

    def _stream(self, key, make):
        if key not in self.streams:
            stream = make()
            with Timer(self.device) as first:
                next(stream)
            self.streams[key], self.first_batch_seconds[key] = stream, first.recorded
        return self.streams[key]

    def batches(self, kind, dtype, channels_last):
        if kind == "torchvision":  # one DataLoader: its workers fork once, before FFCV starts threads
            stream = self._stream("torchvision", lambda: endless(make_torchvision_loader(
                *self.arrays, self.info, self.batch_size, train=True, workers=self.workers)))
            return to_device(stream, self.device, dtype, channels_last)
        # ffcv_async_copy: FFCV's loader with FFCV's asynchronous transfer, kept to price the wait
        batches = Batches(self.batch_size, self.device, dtype, channels_last, async_copy=kind == "ffcv_async_copy")
        loader = "ffcv" if kind == "ffcv_async_copy" else kind
        return self._stream((kind, dtype, channels_last), lambda: endless(make_loader(
            self.info, "train", batches, Sampling(train=True), loader, self.workers)))

    def close(self):
        for stream in self.streams.values():
            stream.close()


def measure_loader(loaders, kind, images, device):
    batches = loaders.batches(kind, torch.float32, True)
    seen = 0
    with Timer(device) as timer:
        while seen < images:
            seen += len(next(batches)[1])
    key = kind if kind == "torchvision" else (kind, torch.float32, True)
    return {"loader": kind, "first_batch_seconds": loaders.first_batch_seconds[key],
            "images_per_second": round(seen / timer.seconds, 1)}


def measure_training(loaders, name, setting, sizes, device):
    setting = {**setting, "channels_last": pick_memory_format(setting["channels_last"], device)[0]}
    dtype = torch.bfloat16 if setting["precision"] == "bf16" else torch.float32
    memory_format = torch.channels_last if setting["channels_last"] else torch.contiguous_format
    batches = loaders.batches(setting["loader"], dtype, setting["channels_last"])
    torch.manual_seed(0)
    torch._dynamo.reset()  # each compiled row pays its own compilation
    model = ResNet18(width=sizes["width"]).to(device, memory_format=memory_format)
    recipe = parse_config(declare_train_sections, []).training  # the defaults are the recipe
    optimizer = make_optimizer(recipe, model, recipe.lr, fused=device.type == "cuda")  # the recipe's, at a fixed max LR: no finder
    steps = sizes["warmup_steps"] + sizes["timed_steps"]
    scheduler = make_scheduler(recipe, optimizer, recipe.lr, steps_per_epoch=-(-steps // recipe.epochs) + 1)
    net = model if setting["compile"] == "off" else torch.compile(model, mode=setting["compile"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with Timer(device) as warmup:
        for _ in range(sizes["warmup_steps"]):
            train_step(net, optimizer, *next(batches), dtype, recipe.label_smoothing)
            scheduler.step()
    with Timer(device) as timed:
        for _ in range(sizes["timed_steps"]):
            train_step(net, optimizer, *next(batches), dtype, recipe.label_smoothing)
            scheduler.step()
    rate = sizes["timed_steps"] * sizes["batch_size"] / timed.seconds
    return {"name": name, **setting, "warmup_seconds": warmup.recorded, "images_per_second": round(rate, 1),
            "epoch_seconds": round(EPOCH_IMAGES / rate, 2),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            if device.type == "cuda" else None}


def training_rows(mode):
    recipe = RECIPES[mode]
    rows = [("baseline: plain PyTorch", BASELINE), ("recipe", recipe)]
    rows += [(f"recipe, {key}={value}", recipe | {key: value}) for key, value in CHANGES[mode]]
    return rows


def write_table(results, path):
    reference = next(r for r in results["loaders"] if r["loader"] == "torchvision")["images_per_second"]
    loaders = markdown_table(["loader", "first batch (s)", "images/s", "vs torchvision DataLoader"], [
        [row["loader"], f"{row['first_batch_seconds']:.2f}", f"{row['images_per_second']:,.0f}",
         f"{row['images_per_second'] / reference:.1f}x"] for row in results["loaders"]])
    training = markdown_table(["training", "loader", "precision", "channels-last", "compile", "warm-up (s)",
                               "images/s", "epoch (s)", "peak GPU memory (GiB)", "speed-up"], [
        [row["name"], row["loader"], row["precision"], row["channels_last"], row["compile"],
         f"{row['warmup_seconds']:.1f}", f"{row['images_per_second']:,.0f}", f"{row['epoch_seconds']:.1f}",
         "-" if row["peak_memory_gib"] is None else f"{row['peak_memory_gib']:.2f}", f"{row['speedup']:.2f}x"]
        for row in results["training"]], left=range(5))
    write_text(path, f"Device: {results['device']['name']} ({results['device']['type']}); data: {results['data']}; "
                     f"{results['date']}; `{published_command(results['command'])}`\n\n{loaders}\n{training}")


def bar_plot(labels, values, title, path):
    figure, axis = plt.subplots(figsize=(8, 0.45 * len(labels) + 1.2))
    axis.barh(labels[::-1], values[::-1], color="tab:blue")
    for y, value in enumerate(values[::-1]):
        axis.text(value, y, f" {value:,.0f}", va="center")
    axis.set(xlabel="images/s", title=title)
    axis.margins(x=0.2)
    save_figure(figure, path)


@exit_on_user_error
def main(argv=None):
    cfg = parse_config(declare_sections, argv, description=__doc__).bench
    mode = cfg.mode if cfg.mode != "auto" else ("gpu" if torch.cuda.is_available() else "cpu")
    device = torch.device("cuda" if mode == "gpu" else "cpu")
    torch.backends.mkldnn.enabled = onednn_is_safe(device)  # as train.py does: see onednn_is_safe
    sizes = {key: getattr(cfg, key) or default for key, default in MODES[mode].items()}
    out = Path(cfg.out or f"benchmarks/results/bench_{mode}")
    out.mkdir(parents=True, exist_ok=True)
    torch.backends.cudnn.benchmark = True
    torch._inductor.config.force_disable_caches = True  # every compiled row pays a cold compile
    workers = cfg.workers or os.cpu_count()

    info = load_dataset_info(cfg.data)
    train_arrays = read_split(info.path("train"))
    results = {"mode": mode, "date": datetime.date.today().isoformat(), "data": source_name(info.source),
               "command": " ".join(["benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)]),
               "device": describe_device(device), "versions": versions(), "onednn": torch.backends.mkldnn.enabled,
               "sizes": sizes | {"workers": workers}}
    loader_rows = Loaders(info, train_arrays, sizes["loader_batch_size"], device, workers)
    training_loaders = Loaders(info, train_arrays, sizes["batch_size"], device, workers)
    with contextlib.closing(loader_rows), contextlib.closing(training_loaders):
        for loaders in (loader_rows, training_loaders):  # DataLoader workers fork before FFCV starts threads
            loaders.batches("torchvision", torch.float32, True)
        results["loaders"] = [measure_loader(loader_rows, kind, sizes["loader_images"], device)
                              for kind in LOADERS]
        loader_rows.close()  # stop its FFCV threads before the training rows
        results["training"] = [measure_training(training_loaders, name, setting, sizes, device)
                               for name, setting in training_rows(mode)] if cfg.rows == "all" else []
    for row in results["training"]:
        row["speedup"] = round(row["images_per_second"] / results["training"][0]["images_per_second"], 3)

    write_json(out / "results.json", results)
    write_table(results, out / "table.md")
    bar_plot([r["loader"] for r in results["loaders"]], [r["images_per_second"] for r in results["loaders"]],
             f"Loader throughput, train split with crop+flip ({results['device']['name']})", out / "loaders.png")
    if results["training"]:
        bar_plot([r["name"] for r in results["training"]], [r["images_per_second"] for r in results["training"]],
                 f"Training throughput, width {sizes['width']}, batch {sizes['batch_size']} "
                 f"({results['device']['name']})", out / "training.png")
    print((out / "table.md").read_text())
    return results


if __name__ == "__main__":
    main()
