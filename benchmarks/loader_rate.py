"""Images/s of one of the kit's loaders over the train split, crop and flip included: run.py's loader rows.

It reads the package only through what every version of the kit has had (`load_dataset_info`,
`make_loader`, the batch format, `Sampling`), so run.py --beside measures an earlier commit's package with
this same code, in a process of its own:

    PYTHONPATH=<a tree with fast_cifar/> python benchmarks/loader_rate.py DATA KIND IMAGES BATCH THREADS

prints the row as one line of JSON.
"""
import json
import os
import sys
import time

import torch


def measure(batches, images, device):
    """{first_batch_seconds, images_per_second} of an endless batch iterator: the first batch timed apart (it
    pays the loader's start and compilation), then `images` images."""
    def elapsed(since):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - since

    started = time.perf_counter()
    next(batches)
    first = elapsed(started)
    seen, started = 0, time.perf_counter()
    while seen < images:
        seen += len(next(batches)[1])
    return {"first_batch_seconds": round(first, 4), "images_per_second": round(seen / elapsed(started), 1)}


def endless(loader):
    while True:
        yield from loader


def main(data, kind, images, batch_size, threads):
    from fast_cifar import data as package
    from fast_cifar.beton import load_dataset_info

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # The batch format was named `Batches` before it was named BatchFormat: --beside measures such commits too.
    batch_format = getattr(package, "BatchFormat", None) or package.Batches
    loader = package.make_loader(load_dataset_info(data), "train", batch_format(int(batch_size), device),
                                 package.Sampling(train=True), kind, int(threads))
    print(json.dumps({"loader": kind, **measure(endless(loader), int(images), device)}), flush=True)
    # Leave at once: an earlier package may not stop FFCV's filling thread, whose teardown can abort.
    os._exit(0)


if __name__ == "__main__":
    main(*sys.argv[1:])
