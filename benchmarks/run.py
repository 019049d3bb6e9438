"""What each ingredient buys on a GPU: the loaders alone, then the recipe's training speed with one thing
changed at a time, against plain PyTorch. Everything runs in one process, row after row, so ratios compare
like with like.

    python benchmarks/run.py --out results/bench --data.path data/cifar10         # every row (a GPU)
    python benchmarks/run.py --out results/bench --data.path data/cifar10 --rows loaders
    python benchmarks/run.py --out results/bench --rows recipe,fused=False        # some rows; flags as train.py's

Loader rows: images/s of each loader alone over the train split with crop and flip, after its first batch
(FFCV's JIT, worker start-up), which is timed apart. `ffcv_async_copy` is FFCV's loader with its own
asynchronous transfer, which can hand out overwritten batches (data.py's image_pipeline): kept to price
the wait that replaced it. Training rows: the recipe (train.py's config, its optimizer and one-cycle
schedule at a fixed max LR: no LR finder) and one change each; images/s over timed steps after warm-up
steps (which include compilation), the epoch time that implies, peak GPU memory, the speed-up over plain
PyTorch. On a CPU the training rows differ by less than its noise: it runs the loader rows unless asked.
Writes results.json, table.md, loaders.png and training.png into --out.
"""
import argparse
import contextlib
import dataclasses
import datetime
import os
import sys
from pathlib import Path

import torch

from fast_cifar.beton import load_dataset_info, read_split
from fast_cifar.config import declare_train_sections, parse_config
from fast_cifar.data import Batches, Sampling, make_loader
from fast_cifar.errors import UserError, exit_on_user_error
from fast_cifar.files import writable_folder, write_json, write_text
from fast_cifar.model import ResNet18
from fast_cifar.optim import make_optimizer, make_scheduler
from fast_cifar.plots import plt, save_figure
from fast_cifar.report import markdown_table, published_command, source_name
from fast_cifar.results import Timer, describe_device, versions
from fast_cifar.train import endless, onednn_is_safe, train_step
from plain_pytorch import make_torchvision_loader  # benchmarks/, beside this script

EPOCH_IMAGES = 50_000
LOADERS = ("torchvision", "ffcv", "ffcv_async_copy", "device")
PLAIN_PYTORCH = dict(loader="torchvision", precision="fp32", channels_last=False, compile="off", fused=False)
RECIPE = dict(loader="ffcv", precision="bf16", channels_last=True, compile="reduce-overhead", fused=True)
COLUMNS = (*RECIPE, "batch_size")  # every row at the config's batch size but the one that changes it
CHANGES = [("loader", "torchvision"), ("loader", "device"), ("channels_last", False), ("precision", "fp32"),
           ("compile", "off"), ("compile", "default"), ("compile", "max-autotune"),  # max-autotune: cold compile
           ("fused", False),  # the optimizer's foreach step instead of its fused kernel
           ("batch_size", 1024)]  # the same max LR: this row prices the step, not the recipe at 1024
TRAINING_ROWS = {"plain_pytorch": PLAIN_PYTORCH, "recipe": RECIPE,
                 **{f"{key}={value}": RECIPE | {key: value} for key, value in CHANGES}}


@dataclasses.dataclass
class Bench:
    """What every row reads: the data, the device, the recipe's config and the step counts."""
    info: object
    device: torch.device
    cfg: object
    args: argparse.Namespace
    torchvision: object = None  # one DataLoader for every row: its workers fork once, before FFCV starts threads
    torchvision_first_batch: float = None  # its first batch, with the workers' start

    def batches(self, kind, setting):
        """Endless train batches from one kind of loader, normalized on the device into the setting's dtype."""
        batches = Batches(setting["batch_size"], self.device, dtype(setting), setting["channels_last"],
                          async_copy=kind == "ffcv_async_copy")
        if kind == "torchvision":
            return to_device(self.torchvision, batches)
        return endless(make_loader(self.info, "train", batches, Sampling(train=True),
                                   kind.removesuffix("_async_copy"), self.cfg.data.loader_threads))


def dtype(setting):
    return torch.bfloat16 if setting["precision"] == "bf16" else torch.float32


def to_device(stream, batches):
    """DataLoader batches moved to the device in the layout and dtype the model takes."""
    memory_format = torch.channels_last if batches.channels_last else torch.contiguous_format
    for images, labels in stream:
        images = images.to(batches.device, non_blocking=True).to(dtype=batches.dtype, memory_format=memory_format)
        yield images, labels.to(batches.device, non_blocking=True)


def measure_loader(bench, kind):
    setting = RECIPE | {"precision": "fp32", "batch_size": bench.cfg.training.batch_size}  # as train.py's batches
    with contextlib.closing(bench.batches(kind, setting)) as batches:
        with Timer(bench.device) as first:
            next(batches)
        seen = 0
        with Timer(bench.device) as timer:
            while seen < bench.args.loader_images:
                seen += len(next(batches)[1])
    first = bench.torchvision_first_batch if kind == "torchvision" else first.recorded
    return {"loader": kind, "first_batch_seconds": first, "images_per_second": round(seen / timer.seconds, 1)}


def measure_training(bench, name, setting):
    device, recipe, args = bench.device, bench.cfg.training, bench.args
    setting = {"batch_size": recipe.batch_size} | setting
    if not onednn_is_safe(device):
        setting["channels_last"] = False  # as train.py does on such a CPU: see onednn_is_safe
    torch.manual_seed(0)
    torch._dynamo.reset()  # each compiled row pays its own compilation
    model = ResNet18(width=bench.cfg.model.width).to(
        device, memory_format=torch.channels_last if setting["channels_last"] else torch.contiguous_format)
    optimizer = make_optimizer(recipe, model, recipe.lr, fused=setting["fused"] and device.type == "cuda")
    steps = args.warmup_steps + args.timed_steps
    scheduler = make_scheduler(recipe, optimizer, recipe.lr, steps_per_epoch=-(-steps // recipe.epochs) + 1)
    net = model if setting["compile"] == "off" else torch.compile(model, mode=setting["compile"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    def run_steps(count):
        for _ in range(count):
            train_step(net, optimizer, *next(batches), dtype(setting), recipe.label_smoothing)
            scheduler.step()

    with contextlib.closing(bench.batches(setting["loader"], setting)) as batches:
        with Timer(device) as warmup:
            run_steps(args.warmup_steps)
        with Timer(device) as timed:
            run_steps(args.timed_steps)
    rate = args.timed_steps * setting["batch_size"] / timed.seconds
    return {"name": name, **setting, "warmup_seconds": warmup.recorded, "images_per_second": round(rate, 1),
            "epoch_seconds": round(EPOCH_IMAGES / rate, 2),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            if device.type == "cuda" else None}


def write_table(results, path):
    loader_rows = results["loaders"]
    reference = loader_rows[0]["images_per_second"] if loader_rows else 1
    loaders = markdown_table(["loader", "first batch (s)", "images/s", f"vs {LOADERS[0]}"], [
        [row["loader"], f"{row['first_batch_seconds']:.2f}", f"{row['images_per_second']:,.0f}",
         f"{row['images_per_second'] / reference:.1f}x"] for row in loader_rows])
    training = markdown_table(["training", *COLUMNS, "warm-up (s)", "images/s", "epoch (s)", "peak GPU memory (GiB)",
                               "speed-up"], [
        [row["name"], *(row[key] for key in COLUMNS), f"{row['warmup_seconds']:.1f}",
         f"{row['images_per_second']:,.0f}", f"{row['epoch_seconds']:.1f}",
         "-" if row["peak_memory_gib"] is None else f"{row['peak_memory_gib']:.2f}", f"{row['speedup']:.2f}x"]
        for row in results["training"]], left=range(1 + len(RECIPE)))
    write_text(path, f"Device: {results['device']['name']} ({results['device']['type']}); data: {results['data']}; "
                     f"{results['date']}; `{published_command(results['command'])}`\n\n{loaders}\n"
                     + (training if results["training"] else ""))


def bar_plot(labels, values, title, path):
    figure, axis = plt.subplots(figsize=(8, 0.45 * len(labels) + 1.2))
    axis.barh(labels[::-1], values[::-1], color="tab:blue")
    for y, value in enumerate(values[::-1]):
        axis.text(value, y, f" {value:,.0f}", va="center")
    axis.set(xlabel="images/s", title=title)
    axis.margins(x=0.2)
    save_figure(figure, path)


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--out", required=True, help="results folder")
    parser.add_argument("--rows", default="", help="'all', 'loaders', or training rows by name, comma-separated "
                        f"({', '.join(TRAINING_ROWS)}); default: all on a GPU, loaders on a CPU")
    parser.add_argument("--loader_images", type=int, default=200_000, help="images per loader row")
    parser.add_argument("--warmup_steps", type=int, default=15, help="untimed steps per training row")
    parser.add_argument("--timed_steps", type=int, default=100, help="timed steps per training row")
    args, train_flags = parser.parse_known_args(argv)  # the rest are train.py's: the recipe and the data
    rows = (args.rows or ("all" if torch.cuda.is_available() else "loaders")).split(",")
    if "all" in rows:
        rows = ["loaders", *TRAINING_ROWS]
    if unknown := set(rows) - {"loaders", *TRAINING_ROWS}:
        raise UserError(f"--rows names unknown rows: {', '.join(sorted(unknown))}")
    return args, rows, parse_config(declare_train_sections, train_flags)


@exit_on_user_error
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args, rows, cfg = parse(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.mkldnn.enabled = onednn_is_safe(device)  # as train.py does: see onednn_is_safe
    torch.backends.cudnn.benchmark = True
    torch._inductor.config.force_disable_caches = True  # every compiled row pays a cold compile
    out = writable_folder(Path(args.out))
    info = load_dataset_info(cfg.data.path)
    workers = cfg.data.loader_threads if cfg.data.loader_threads > 0 else os.cpu_count()
    bench = Bench(info, device, cfg, args, endless(make_torchvision_loader(
        *read_split(info.path("train")), info, cfg.training.batch_size, train=True, workers=workers)))
    with Timer(device) as first:
        next(bench.torchvision)  # fork the DataLoader's workers now, before any FFCV thread exists
    bench.torchvision_first_batch = first.recorded
    results = {"date": datetime.date.today().isoformat(), "data": source_name(info.source),
               "command": " ".join(["benchmarks/run.py", *argv]), "device": describe_device(device),
               "versions": versions(), "onednn": torch.backends.mkldnn.enabled, "steps": vars(args)}
    with contextlib.closing(bench.torchvision):
        results["loaders"] = [measure_loader(bench, kind) for kind in LOADERS] if "loaders" in rows else []
        results["training"] = [measure_training(bench, name, TRAINING_ROWS[name]) for name in TRAINING_ROWS
                               if name in rows]
    reference = results["training"][0]["images_per_second"] if results["training"] else None
    for row in results["training"]:  # over the first row measured: plain PyTorch's, unless --rows left it out
        row["speedup"] = round(row["images_per_second"] / reference, 3)

    write_json(out / "results.json", results)
    write_table(results, out / "table.md")
    for kind, label in (("loaders", "loader"), ("training", "name")):
        if results[kind]:
            bar_plot([row[label] for row in results[kind]], [row["images_per_second"] for row in results[kind]],
                     f"{kind.capitalize()} throughput, images/s ({results['device']['name']})", out / f"{kind}.png")
    print((out / "table.md").read_text())
    return results


if __name__ == "__main__":
    main()
