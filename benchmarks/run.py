"""What each ingredient buys, in one process so that ratios compare like with like (benchmarks/README.md).

    python benchmarks/run.py --out results/bench --data.path data/cifar10         # every row (a GPU)
    python benchmarks/run.py --out results/bench --data.path data/cifar10 --rows loaders,batches
    python benchmarks/run.py --out results/bench --rows recipe,fused=False        # some rows; flags as train.py's

loaders: each loader's images/s over the train split with crop and flip, its first batch timed apart.
batches: FFCV's batches behind a slow GPU, with its asynchronous copy and with the kit's waiting one, each
checked against the device loader's identical batch; the same weights evaluated through both loaders; the
epoch check's cost. Training rows: images/s of the recipe's steps (its optimizer and one-cycle schedule at
a fixed max LR) with one thing changed, and plain PyTorch's; on a CPU only when asked (they differ there by
less than its noise). Writes results.json, table.md, loaders.png and training.png into --out.
"""
import argparse
import contextlib
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from fast_cifar.beton import load_dataset_info, read_split
from fast_cifar.config import declare_train_sections, parse_config
from fast_cifar.data import BatchFormat, SampleCheck, Sampling, make_loader
from fast_cifar.errors import UserError, exit_on_user_error
from fast_cifar.files import writable_folder, write_json, write_text
from fast_cifar.model import ResNet18
from fast_cifar.optim import make_optimizer, make_scheduler
from fast_cifar.plots import plt, save_figure
from fast_cifar.report import markdown_table, published_command, source_name
from fast_cifar.results import Timer, describe_device, source_commit, versions
from fast_cifar.compute import DTYPES, onednn_is_safe, pick_loader, pick_memory_format, pick_precision
from fast_cifar.steps import endless, evaluate, train_step
import loader_rate  # benchmarks/, beside this script
from plain_pytorch import make_torchvision_loader

ROOT = Path(__file__).resolve().parent.parent

EPOCH_IMAGES = 50_000
# ffcv_async_copy: FFCV's own asynchronous transfer, which can hand out overwritten batches
# (ffcv_pipeline.py): kept to price the wait that replaced it, and to show what it hands out.
LOADERS = ("torchvision", "ffcv", "ffcv_async_copy", "device")
# A training row's ingredients: the table's columns.
INGREDIENTS = ("loader", "precision", "channels_last", "compile", "fused", "batch_size")
PLAIN_PYTORCH = dict(loader="torchvision", precision="fp32", channels_last=False, compile="off", fused=False)
# Each row past the recipe's changes one of its ingredients; one that would change nothing on this machine (the
# loader the recipe reads through already) is left out.
CHANGES = [("loader", "torchvision"), ("loader", "ffcv"), ("loader", "device"), ("channels_last", False),
           ("precision", "fp32"), ("compile", "off"), ("compile", "default"),
           ("compile", "max-autotune"),  # a cold compile
           ("fused", False),  # the optimizer's foreach step instead of its fused kernel
           ("batch_size", 1024)]  # the same max LR: this row prices the step, not the recipe at 1024
ROW_NAMES = ("plain_pytorch", "recipe", *(f"{key}={value}" for key, value in CHANGES))
BATCH_COUNTS = ("batches", "correct", "duplicate", "torn", "missing", "wrong_labels")


class Bench:
    """What every row reads: the config, the data, the device, and, where a row reads through it, one
    torchvision DataLoader for every row, whose workers fork once, before any FFCV thread exists."""

    def __init__(self, cfg, args, rows):
        self.cfg, self.args, self.info = cfg, args, load_dataset_info(cfg.data.path)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.recipe = recipe_ingredients(cfg, self.device)
        self.training_rows = {name: row for name, row in training_rows(self.recipe).items() if name in rows}
        self.torchvision, self.torchvision_first_batch = None, None
        if "loaders" in rows or any(row["loader"] == "torchvision" for row in self.training_rows.values()):
            workers = cfg.data.loader_threads if cfg.data.loader_threads > 0 else os.cpu_count()
            self.torchvision = endless(make_torchvision_loader(*read_split(self.info.path("train")), self.info,
                                                               cfg.training.batch_size, train=True, workers=workers))
            with Timer(self.device) as first:
                next(self.torchvision)
            self.torchvision_first_batch = first.recorded  # with the workers' start

    def close(self):
        if self.torchvision:
            self.torchvision.close()  # stops its workers

    def loader(self, kind, split, batch_format):
        """One kind of loader over a split (seed 0): FFCV's or the device's as the kit builds them, or FFCV's
        with its own asynchronous transfer ("ffcv_async_copy"), the fault the kit's waiting copy replaced."""
        unsafe = kind == "ffcv_async_copy"
        loader = make_loader(self.info, split, batch_format, Sampling(split == "train"), "ffcv" if unsafe else kind,
                             self.cfg.data.loader_threads)
        return with_async_copy(loader) if unsafe else loader

    def batches(self, kind, setting):
        """Endless train batches from one kind of loader, on the device in the setting's dtype and layout."""
        dtype = DTYPES[setting["precision"]]
        batch_format = BatchFormat(setting["batch_size"], self.device, dtype, setting["channels_last"])
        if kind != "torchvision":
            return endless(self.loader(kind, "train", batch_format))
        layout = torch.channels_last if batch_format.channels_last else torch.contiguous_format
        return ((images.to(self.device, non_blocking=True).to(dtype=dtype, memory_format=layout),
                 labels.to(self.device, non_blocking=True)) for images, labels in self.torchvision)


def recipe_ingredients(cfg, device):
    """The recipe as train.py runs it from the config on this device: the loader, precision and layout it
    picks, its compile mode, the fused optimizer on a GPU, the batch size."""
    return dict(loader=pick_loader(cfg.data.loader, device),
                precision=pick_precision(cfg.training.precision, device)[0],
                channels_last=pick_memory_format(cfg.model.channels_last, device)[0],
                compile=cfg.training.compile_mode if cfg.training.compile else "off",
                fused=device.type == "cuda", batch_size=cfg.training.batch_size)


def training_rows(recipe):
    """{name: ingredients}: plain PyTorch's, the recipe's, and the recipe with one ingredient changed."""
    return {"plain_pytorch": PLAIN_PYTORCH | {"batch_size": recipe["batch_size"]}, "recipe": recipe,
            **{f"{key}={value}": recipe | {key: value} for key, value in CHANGES if recipe[key] != value}}


def with_async_copy(loader):
    """An FFCV loader whose transfers do not wait for their copies: FFCV's default, which the kit turns off."""
    from ffcv.transforms import ToDevice  # imported with the loader already: ffcv only when used

    for transfer in [op for spec in loader.pipeline_specs.values() for op in spec.transforms
                     if isinstance(op, ToDevice)]:
        transfer.non_blocking = True  # read as each copy is made
    return loader


def measure_loader(bench, kind):
    setting = bench.recipe | {"precision": "fp32"}  # as train.py's batches
    with contextlib.closing(bench.batches(kind, setting)) as batches:
        row = {"loader": kind, **loader_rate.measure(batches, bench.args.loader_images, bench.device)}
    if kind == "torchvision":
        row["first_batch_seconds"] = bench.torchvision_first_batch  # its workers' start, not a warm batch
    return row


def loaders_beside(bench, commit):
    """The ffcv and device rows of `commit`'s package and of this tree's, alternately, `--repeats` times, each
    in a process of its own through loader_rate.py, beside a torchvision row per repeat: one machine, one
    run, so that the two commits compare like with like on a noisy machine."""
    args, rows = bench.args, []
    with tempfile.TemporaryDirectory(prefix="fast_cifar_beside_") as earlier:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "fast_cifar"], capture_output=True,
                                 check=True)
        subprocess.run(["tar", "-x", "-C", earlier], input=archive.stdout, check=True)
        for repeat in range(args.repeats):
            rows.append({"commit": "-", "repeat": repeat, **measure_loader(bench, "torchvision")})
            for tree, label in ((earlier, commit), (ROOT, source_commit())):
                for kind in [kind for kind in bench.args.loaders.split(",") if kind in ("ffcv", "device")]:
                    command = [sys.executable, str(ROOT / "benchmarks/loader_rate.py"), bench.cfg.data.path, kind,
                               str(args.loader_images), str(bench.cfg.training.batch_size),
                               str(bench.cfg.data.loader_threads)]
                    done = subprocess.run(command, env=os.environ | {"PYTHONPATH": str(tree)}, capture_output=True,
                                          text=True, check=True)
                    rows.append({"commit": label, "repeat": repeat, **json.loads(done.stdout.splitlines()[-1])})
    return rows


def check_batches(bench):
    """FFCV's batches behind a slow consumer, with each transfer, against the device loader's; the same
    weights evaluated through both loaders; and the epoch check's own seconds."""
    rows, training = [], bench.cfg.training
    for split, size in (("test", training.test_batch_size), ("train", training.batch_size)):
        batch_format = BatchFormat(size, bench.device, torch.bfloat16)
        expected = read_epoch(bench.loader("device", split, batch_format))
        for kind in ("ffcv_async_copy", "ffcv"):
            delivered = read_epoch(bench.loader(kind, split, batch_format), bench.args.sleep_ms)
            rows.append({"split": split, "loader": kind, **classify(delivered, expected)})
    torch.manual_seed(0)
    model = ResNet18(len(bench.info.classes), bench.cfg.model.width).to(bench.device)
    test = BatchFormat(training.test_batch_size, bench.device, torch.bfloat16, channels_last=False)
    evaluations = {kind: evaluate(model, bench.loader(kind, "test", test), torch.bfloat16, 0.0)
                   for kind in ("ffcv", "device")}
    return {"sleep_ms": bench.args.sleep_ms, "rows": rows, "evaluation": evaluations,
            "evaluations_equal": evaluations["ffcv"] == evaluations["device"],
            "check_seconds_per_epoch": check_seconds(bench.loader("device", "train", batch_format))}


def read_epoch(loader, sleep_ms=0.0):
    """[(a checksum per image, labels)] for one epoch, each batch behind `sleep_ms` of GPU sleep, queued with
    a copy of the batch and no synchronization, so the GPU falls ever further behind, as under CUDA graphs."""
    delivered = []
    for images, labels in loader:
        if images.is_cuda and sleep_ms:
            torch.cuda._sleep(int(sleep_ms * 1.5e6))  # about a millisecond per 1.5 million cycles
        # position-weighted, so that a shifted or mirrored image sums differently
        weights = torch.arange(1, images[0].numel() + 1, device=images.device, dtype=torch.float64)
        delivered.append(((images.flatten(1).double() * weights).sum(1), labels.clone()))
    return delivered


def classify(delivered, expected):
    """Each delivered batch: correct (the expected one at its place), duplicate (another batch of the epoch,
    so one is missing) or torn (no batch: parts of two or more); missing: expected, never delivered whole."""
    counts = dict.fromkeys(BATCH_COUNTS, 0) | {"batches": len(delivered), "expected": len(expected)}
    whole = set()
    for place, (prints, labels) in enumerate(delivered):
        matches = {j for j, (other, _) in enumerate(expected) if other.shape == prints.shape
                   and torch.equal(other, prints)}
        whole |= matches
        counts["correct" if place in matches else "duplicate" if matches else "torn"] += 1
        if place < len(expected):
            reference = expected[place][1]
            same_shape = labels.shape == reference.shape
            counts["wrong_labels"] += int((labels != reference).sum()) if same_shape else len(labels)
    counts["missing"] = len(expected) - len(whole)
    return counts


def check_seconds(loader):
    """What the epoch's check (SampleCheck) adds to an epoch over `loader`: a copy of each batch's labels and
    one comparison at the end; the second of two passes, the first allocating."""
    labels = torch.from_numpy(loader.expected_labels()).to(loader.device)
    for _ in range(2):
        with Timer(loader.device) as timer:
            check = SampleCheck(loader)
            for batch in labels.split(loader.batch_size):
                check.add(batch)
            check.verify("train")
    return round(timer.seconds, 6)


def measure_training(bench, name, setting):
    device, recipe, args = bench.device, bench.cfg.training, bench.args
    torch.manual_seed(0)
    torch._dynamo.reset()  # each compiled row pays its own compilation
    model = ResNet18(width=bench.cfg.model.width).to(
        device, memory_format=torch.channels_last if setting["channels_last"] else torch.contiguous_format)
    optimizer = make_optimizer(recipe, model, recipe.lr, fused=setting["fused"] and device.type == "cuda")
    steps = args.warmup_steps + args.timed_steps
    scheduler = make_scheduler(recipe, optimizer, recipe.lr, steps_per_epoch=-(-steps // recipe.epochs) + 1)
    net = model if setting["compile"] == "off" else torch.compile(model, mode=setting["compile"])
    dtype = DTYPES[setting["precision"]]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def run_steps(count):
        for _ in range(count):
            train_step(net, optimizer, *next(batches), dtype, recipe.label_smoothing)
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


def write_report(results, out):
    """table.md, and a bar chart of images/s for each kind of row measured."""
    loaders, batches, training = results["loaders"], results["batches"], results["training"]
    tables = [f"Device: {results['device']['name']} ({results['device']['type']}); data: {results['data']}; "
              f"{results['date']}; commit {results['commit']}; `{published_command(results['command'])}`\n"]
    if loaders:  # each row against the torchvision row of its round (--beside measures several)
        torchvision = {row.get("repeat"): row["images_per_second"] for row in loaders if row["loader"] == "torchvision"}
        tables.append(markdown_table(["loader", "first batch (s)", "images/s", "vs torchvision"], [
            [loader_label(row), f"{row['first_batch_seconds']:.2f}", f"{row['images_per_second']:,.0f}",
             f"{row['images_per_second'] / torchvision[row.get('repeat')]:.1f}x"] for row in loaders]))
    if batches:
        tables.append(f"Batches behind {batches['sleep_ms']:g} ms of GPU sleep each:\n\n" + markdown_table(
            ["split", "loader", *BATCH_COUNTS], [[row[key] for key in ("split", "loader", *BATCH_COUNTS)]
                                                 for row in batches["rows"]], left=(0, 1))
            + f"\nThe same weights through both test loaders: equal = {batches['evaluations_equal']}. The epoch's "
              f"check: {1e3 * batches['check_seconds_per_epoch']:.3f} ms per train epoch.\n")
    if training:
        tables.append(markdown_table(
            ["training", *INGREDIENTS, "warm-up (s)", "images/s", "epoch (s)", "peak GPU memory (GiB)", "speed-up"],
            [[row["name"], *(row[key] for key in INGREDIENTS), f"{row['warmup_seconds']:.1f}",
              f"{row['images_per_second']:,.0f}", f"{row['epoch_seconds']:.1f}",
              "-" if row["peak_memory_gib"] is None else f"{row['peak_memory_gib']:.2f}", f"{row['speedup']:.2f}x"]
             for row in training], left=range(len(INGREDIENTS))))
    write_text(out / "table.md", "\n".join(tables))
    for kind, rows, label in (("loaders", loaders, loader_label), ("training", training, lambda row: row["name"])):
        if rows:
            figure, axis = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
            values = [row["images_per_second"] for row in reversed(rows)]
            axis.barh([label(row) for row in reversed(rows)], values, color="tab:blue")
            for y, value in enumerate(values):
                axis.text(value, y, f" {value:,.0f}", va="center")
            axis.set(xlabel="images/s", title=f"{kind.capitalize()} throughput ({results['device']['name']})")
            axis.margins(x=0.2)
            save_figure(figure, out / f"{kind}.png")


def loader_label(row):
    """A loader row's name: with --beside, the commit it measured and its round too."""
    if "commit" not in row:
        return row["loader"]
    return f"{row['loader']} (round {row['repeat'] + 1})" if row["loader"] == "torchvision" else \
        f"{row['loader']} at {row['commit']} (round {row['repeat'] + 1})"


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--out", required=True, help="results folder")
    parser.add_argument("--rows", default="", help="'all', 'loaders', 'batches' or training rows by name, "
                        f"comma-separated ({', '.join(ROW_NAMES)}); default: all on a GPU, loaders on a CPU")
    parser.add_argument("--loader_images", type=int, default=200_000, help="images per loader row")
    parser.add_argument("--loaders", default=",".join(LOADERS), help="the loader rows, comma-separated (with "
                        "--beside: its ffcv and device rows, each beside torchvision's)")
    parser.add_argument("--beside", metavar="COMMIT", help="also the loader rows of COMMIT's package, alternating "
                        "with this tree's (with --rows loaders)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of loader rows with --beside")
    parser.add_argument("--sleep_ms", type=float, default=10.0, help="GPU sleep queued per batch when checking them")
    parser.add_argument("--warmup_steps", type=int, default=15, help="untimed steps per training row")
    parser.add_argument("--timed_steps", type=int, default=100, help="timed steps per training row")
    args, train_flags = parser.parse_known_args(argv)  # the rest are train.py's: the recipe and the data
    rows = (args.rows or ("all" if torch.cuda.is_available() else "loaders")).split(",")
    rows = ["loaders", "batches", *ROW_NAMES] if "all" in rows else rows
    if unknown := set(rows) - {"loaders", "batches", *ROW_NAMES}:
        raise UserError(f"--rows names unknown rows: {', '.join(sorted(unknown))}")
    if unknown := set(args.loaders.split(",")) - set(LOADERS):
        raise UserError(f"--loaders names unknown loaders: {', '.join(sorted(unknown))} (known: {', '.join(LOADERS)})")
    if args.beside and subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet",
                                       f"{args.beside}^{{commit}}"], capture_output=True).returncode:
        raise UserError(f"--beside {args.beside}: no such commit in {ROOT.name}'s history")
    return args, rows, parse_config(declare_train_sections, train_flags)


@exit_on_user_error
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args, rows, cfg = parse(argv)
    out = writable_folder(Path(args.out))
    bench = Bench(cfg, args, rows)
    torch.backends.mkldnn.enabled = onednn_is_safe(bench.device)  # as train.py does: see onednn_is_safe
    torch.backends.cudnn.benchmark = True
    torch._inductor.config.force_disable_caches = True  # every compiled row pays a cold compile
    results = {"date": datetime.date.today().isoformat(), "data": source_name(bench.info.source),
               "command": " ".join(["benchmarks/run.py", *argv]), "device": describe_device(bench.device),
               "commit": source_commit(), "versions": versions(), "onednn": torch.backends.mkldnn.enabled,
               "steps": vars(args)}
    with contextlib.closing(bench):
        if "loaders" in rows:
            results["loaders"] = loaders_beside(bench, args.beside) if args.beside else \
                [measure_loader(bench, kind) for kind in args.loaders.split(",")]
        else:
            results["loaders"] = []
        results["batches"] = check_batches(bench) if "batches" in rows else None
        if repeats := [name for name in rows if name in ROW_NAMES and name not in bench.training_rows]:
            print(f"not measured: {', '.join(repeats)}: the recipe has that already on this machine")
        results["training"] = [measure_training(bench, name, setting) for name, setting in bench.training_rows.items()]
    for row in results["training"]:  # over the first row measured: plain PyTorch's, unless --rows left it out
        row["speedup"] = round(row["images_per_second"] / results["training"][0]["images_per_second"], 3)
    write_json(out / "results.json", results)
    write_report(results, out)
    print((out / "table.md").read_text())
    return results


if __name__ == "__main__":
    main()
