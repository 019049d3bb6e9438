"""Does FFCV's loader hand out the batches it should when the GPU runs behind? Counted, with and without
the kit's waiting transfer, against the device loader, which builds the same batches (same order, same crops
and flips) with no host buffers at all.

    python benchmarks/batch_check.py --data.path data/cifar10 --out benchmarks/results/batch_check_h200

For each split and each transfer (`async`: FFCV's default non_blocking copy; `waiting`: the kit's), one
epoch is read by a deliberately slow consumer: each batch queues `--sleep_ms` of GPU sleep, then a copy of
the batch, with no synchronization, so the GPU falls ever further behind the loader's CPU threads, as it
does under CUDA graphs. Each delivered batch is then compared, image by image (a checksum of its pixels)
and label by label, with the device loader's batches of the same epoch:
    correct     equal to the batch expected at its place
    duplicate   equal to another batch of the epoch (so one expected batch is missing)
    torn        equal to no batch: parts of two or more
    missing     expected batches that were never delivered whole
Then one set of weights is evaluated on the test split through both loaders: the results must be equal.
Last, what the epoch's check (`SampleCheck`) costs: a device-loader epoch of the train split with and
without it, loader alone, the best of 3 each (an upper bound on its share of a training epoch).
Writes batch_check.json (with the device, versions and command) and prints a table. On a CPU the fault
cannot happen (no streams, no asynchronous copies): the script runs the same steps, as a dry run.
"""
import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from fast_cifar.beton import load_dataset_info
from fast_cifar.data import Batches, SampleCheck, Sampling, make_loader
from fast_cifar.errors import exit_on_user_error
from fast_cifar.files import writable_folder, write_json
from fast_cifar.model import ResNet18
from fast_cifar.report import markdown_table
from fast_cifar.results import Timer, describe_device, versions
from fast_cifar.train import evaluate

EPOCH = 1
SEED = 0


def fingerprints(images):
    """One float64 checksum per image, position-weighted so that a shifted or mirrored image differs."""
    weights = torch.arange(1, images[0].numel() + 1, device=images.device, dtype=torch.float64)
    return (images.flatten(1).double() * weights).sum(1)


def slow_pass(loader, sleep_ms):
    """One epoch, each batch behind `sleep_ms` of GPU sleep and kept as a copy, with no synchronization."""
    cycles = int(sleep_ms * 1e-3 * 1.5e9)  # about a millisecond per 1.5 million cycles on current GPUs
    delivered = []
    loader.next_epoch = EPOCH
    for images, labels in loader:
        if images.is_cuda:
            torch.cuda._sleep(cycles)
        delivered.append((fingerprints(images), labels.clone()))
    return delivered


def classify(delivered, expected):
    """Counts of correct, duplicate, torn and missing batches, and of wrong labels."""
    expected_prints = [prints for prints, _ in expected]
    counts = dict(batches=len(delivered), expected=len(expected), correct=0, duplicate=0, torn=0, wrong_labels=0)
    whole = set()
    for place, (prints, labels) in enumerate(delivered):
        matches = [j for j, other in enumerate(expected_prints) if other.shape == prints.shape
                   and torch.equal(other, prints)]
        whole.update(matches)
        kind = "correct" if place in matches else "duplicate" if matches else "torn"
        counts[kind] += 1
        if place < len(expected):
            reference = expected[place][1]
            counts["wrong_labels"] += int((labels != reference).sum()) if labels.shape == reference.shape \
                else len(labels)
    counts["missing"] = len(expected) - len(whole)
    return counts


def count_faults(info, device, args):
    rows = []
    for split, size in (("test", 1000), ("train", 512)):
        batches = Batches(size, device, torch.bfloat16)
        reference = make_loader(info, split, batches, Sampling(split == "train", seed=SEED), "device")
        reference.next_epoch = EPOCH
        expected = [(fingerprints(images), labels.clone()) for images, labels in reference]
        for transfer, async_copy in (("async", True), ("waiting", False)):
            loader = make_loader(info, split, dataclasses.replace(batches, async_copy=async_copy),
                                 Sampling(split == "train", seed=SEED), "ffcv", args.threads)
            counts = classify(slow_pass(loader, args.sleep_ms), expected)
            rows.append({"split": split, "transfer": transfer, **counts})
            print(f"{split:5} {transfer:7} {counts}", flush=True)
    return rows


def compare_evaluations(info, device, args):
    """The same weights through the FFCV (waiting transfer) and device test loaders: the same metrics."""
    torch.manual_seed(SEED)
    model = ResNet18(len(info.classes), args.width).to(device, memory_format=torch.channels_last)
    batches = Batches(1000, device, torch.bfloat16)
    results = {}
    for kind in ("ffcv", "device"):
        loader = make_loader(info, "test", batches, Sampling(False), kind, args.threads)
        results[kind] = evaluate(model, loader, torch.bfloat16, 0.0)
    return {**results, "equal": results["ffcv"] == results["device"]}


def check_cost(info, device):
    """Seconds of a device-loader epoch over the train split with and without the epoch's check."""
    loader = make_loader(info, "train", Batches(512, device, torch.bfloat16), Sampling(True, seed=SEED), "device")

    def epoch(checked):
        check = SampleCheck(loader) if checked else None
        with Timer(device) as timer:
            for _, labels in loader:
                if check:
                    check.add(labels)
            if check:
                check.verify("train")
        return timer.seconds

    epoch(True)  # warm-up
    plain, checked = min(epoch(False) for _ in range(3)), min(epoch(True) for _ in range(3))
    return {"epoch_seconds": round(plain, 5), "checked_epoch_seconds": round(checked, 5),
            "check_microseconds_per_batch": round(1e6 * (checked - plain) / len(loader), 2)}


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data.path", dest="data", default="data/cifar10", help="folder with the .beton files")
    parser.add_argument("--out", required=True, help="folder for batch_check.json")
    parser.add_argument("--sleep_ms", type=float, default=10.0, help="GPU sleep queued per batch, in ms")
    parser.add_argument("--threads", type=int, default=-1, help="FFCV loader threads (-1: all cores)")
    parser.add_argument("--width", type=int, default=64, help="ResNet-18's first-stage channels, for evaluation")
    return parser.parse_args(argv)


@exit_on_user_error
def main(argv=None):
    args = parse(argv)
    out = writable_folder(Path(args.out), "--out")
    info = load_dataset_info(args.data)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = count_faults(info, device, args)
    evaluations = compare_evaluations(info, device, args)
    cost = check_cost(info, device)
    print(markdown_table(["split", "transfer", "batches", "correct", "duplicate", "torn", "missing", "wrong labels"],
                         [[row["split"], row["transfer"], row["batches"], row["correct"], row["duplicate"],
                           row["torn"], row["missing"], row["wrong_labels"]] for row in rows]))
    print(f"the same weights, evaluated through both loaders: equal = {evaluations['equal']}")
    print(f"the epoch's check: {cost['check_microseconds_per_batch']} us per batch (loader-only epoch "
          f"{cost['epoch_seconds']:.3f} s, checked {cost['checked_epoch_seconds']:.3f} s)")
    write_json(out / "batch_check.json", {"device": describe_device(device), "versions": versions(),
                                          "command": " ".join(["python", "benchmarks/batch_check.py", *sys.argv[1:]]),
                                          "data": str(info.source), "sleep_ms": args.sleep_ms, "epoch": EPOCH,
                                          "rows": rows, "evaluation": evaluations, "check_cost": cost})


if __name__ == "__main__":
    main()
