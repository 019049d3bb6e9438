"""Where FFCV's loader spends its time: its train pipeline cut after each step, each cut's images/s, and
what each step adds per batch. In one process, cut after cut, then again in a second round.

    python benchmarks/loader_steps.py --data.path data/cifar10 --out results/loader_steps

Writes results.json and table.md into --out. Every cut reads the train split in FFCV's random order with
the kit's seeded crop and flip, through `EpochLoader`, at the recipe's batch size.
"""
import argparse
import contextlib
import datetime
import sys
from pathlib import Path

import numpy as np
import torch

import loader_rate  # benchmarks/, beside this script
from fast_cifar.beton import load_dataset_info
from fast_cifar.config import declare_train_sections, parse_config
from fast_cifar.data import BatchFormat, Sampling
from fast_cifar.errors import exit_on_user_error
from fast_cifar.ffcv_pipeline import EpochLoader, NormalizeStep, PixelPass, ViewAs, image_pipeline
from fast_cifar.files import writable_folder, write_json, write_text
from fast_cifar.normalize import Normalize, normalization_table
from fast_cifar.report import markdown_table, published_command, source_name
from fast_cifar.results import describe_device, source_commit, versions
# after fast_cifar.ffcv_pipeline, which records torch's thread count before ffcv's import sets it to 1
from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
from ffcv.loader import OrderOption
from ffcv.transforms import ToDevice, ToTensor, ToTorchImage

CPU = torch.device("cpu")


def cuts(info, batches):
    """{name: image pipeline}: each cut one step longer than the one before it, then the alternatives."""
    train = Sampling(train=True)
    table = normalization_table(info.mean, info.std, batches.dtype)
    uint8_to_device = [ToTensor(), ViewAs(torch.uint8), ToDevice(batches.device, False), ToTorchImage()]
    return {
        "decode (uint8)": [SimpleRGBImageDecoder(), ToTensor()],
        "+ crop, flip (uint8)": [SimpleRGBImageDecoder(), PixelPass(info.fill, train), ToTensor()],
        "+ normalize in the same pass": [SimpleRGBImageDecoder(), PixelPass(info.fill, train, table), ToTensor()],
        "+ as a torch batch (on a GPU: to it, normalized there): the kit's pipeline":
            image_pipeline(info, batches, train),
        "alternative: normalize as a torch op after the transfer": [
            SimpleRGBImageDecoder(), PixelPass(info.fill, train), *uint8_to_device,
            NormalizeStep(Normalize(info.mean, info.std, batches.dtype, batches.device))],
    }


def measure_cut(info, pipeline, batches, args):
    loader = EpochLoader(info.path("train"), batches.device, batch_size=batches.size, num_workers=args.threads,
                         order=OrderOption.RANDOM, drop_last=True, seed=0,
                         pipelines={"image": pipeline, "label": [IntDecoder(), ToTensor()]})
    with contextlib.closing(loader_rate.endless(loader)) as stream:
        return loader_rate.measure(stream, args.images, batches.device)


@exit_on_user_error
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="results folder")
    parser.add_argument("--images", type=int, default=100_000, help="images per cut and round")
    parser.add_argument("--rounds", type=int, default=2, help="passes over all the cuts")
    parser.add_argument("--threads", type=int, default=-1, help="FFCV's threads (-1: one per core)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="the batches' dtype")
    args, train_flags = parser.parse_known_args(argv)
    cfg = parse_config(declare_train_sections, train_flags)
    out, info = writable_folder(Path(args.out)), load_dataset_info(cfg.data.path)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batches = BatchFormat(cfg.training.batch_size, device, getattr(torch, args.dtype))
    rates = {}
    for _ in range(args.rounds):
        for name, pipeline in cuts(info, batches).items():
            rates.setdefault(name, []).append(measure_cut(info, pipeline, batches, args)["images_per_second"])
    results = {"date": datetime.date.today().isoformat(), "data": source_name(info.source),
               "command": " ".join(["benchmarks/loader_steps.py", *argv]), "commit": source_commit(),
               "device": describe_device(device), "versions": versions(), "batch_size": batches.size,
               "dtype": args.dtype, "images_per_second": rates}
    write_json(out / "results.json", results)
    write_text(out / "table.md", table(results))
    print(table(results))


def table(results):
    """A row per cut: images/s in each round, their median, and the milliseconds per batch it adds."""
    rows, before = [], 0.0
    for name, rates in results["images_per_second"].items():
        ms_per_batch = 1e3 * results["batch_size"] / float(np.median(rates))
        added = "" if name.startswith("alternative") or not before else f"{ms_per_batch - before:+.2f}"
        rows.append([name, *(f"{rate:,.0f}" for rate in rates), f"{ms_per_batch:.2f}", added])
        before = before if name.startswith("alternative") else ms_per_batch
    rounds = len(next(iter(results["images_per_second"].values())))
    return (f"Device: {results['device']['name']}; {results['dtype']} batches of {results['batch_size']}; data: "
            f"{results['data']}; {results['date']}; commit {results['commit']}; "
            f"`{published_command(results['command'])}`\n\n"
            + markdown_table(["cut", *(f"images/s, round {r + 1}" for r in range(rounds)), "ms per batch (median)",
                              "ms the step adds"], rows))


if __name__ == "__main__":
    main()
