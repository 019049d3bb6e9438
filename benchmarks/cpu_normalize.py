"""Where to normalize when FFCV's loader feeds a CPU: the measurement behind data.py's choice.

    python benchmarks/cpu_normalize.py [--data data/cifar10] [--out benchmarks/results/cpu_normalize.json]

Same augmentation pipeline, four endings, batch 512, images/s of the third epoch.
"""
import argparse
import datetime
import time

import numpy as np
import torch
from ffcv.fields.decoders import SimpleRGBImageDecoder
from ffcv.loader import Loader, OrderOption
from ffcv.transforms import NormalizeImage, RandomHorizontalFlip, RandomTranslate, ToDevice, ToTensor, ToTorchImage

from fast_cifar.beton import load_dataset_info
from fast_cifar.data import label_pipeline
from fast_cifar.files import write_json
from fast_cifar.results import describe_device, versions

CPU = torch.device("cpu")


class TorchOps(torch.nn.Module):
    def __init__(self, mean, std, in_place):
        super().__init__()
        self.mean, self.std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
        self.in_place = in_place

    def forward(self, images):
        if self.in_place:
            return images.float().sub_(self.mean).div_(self.std)
        return ((images.float() - self.mean) / self.std).to(torch.float32)


def endings(info):
    tail = [ToTensor(), ToDevice(CPU), ToTorchImage()]
    return {
        "torch ops after the loader": tail + [TorchOps(info.mean, info.std, in_place=False)],
        "in-place torch ops after the loader": tail + [TorchOps(info.mean, info.std, in_place=True)],
        "NormalizeImage in FFCV's compiled stage": [NormalizeImage(np.array(info.mean), np.array(info.std),
                                                                   np.float32)] + tail,
        "no normalization (uint8, the ceiling)": tail,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="data/cifar10")
    parser.add_argument("--out", default="benchmarks/results/cpu_normalize.json")
    args = parser.parse_args()
    info = load_dataset_info(args.data)
    fill = tuple(int(round(c)) for c in info.mean)
    rows = {}
    for name, ending in endings(info).items():
        pipeline = [SimpleRGBImageDecoder(), RandomTranslate(padding=4, fill=fill), RandomHorizontalFlip(), *ending]
        loader = Loader(str(info.path("train")), batch_size=512, num_workers=-1, order=OrderOption.RANDOM,
                        drop_last=True, pipelines={"image": pipeline, "label": label_pipeline(CPU)})
        for _ in range(3):
            start, seen = time.perf_counter(), 0
            for _, labels in loader:
                seen += len(labels)
        rows[name] = round(seen / (time.perf_counter() - start))
        print(f"{name}: {rows[name]:,} images/s")
    write_json(args.out, {"date": datetime.date.today().isoformat(), "command": "benchmarks/cpu_normalize.py",
                          "data": info.source, "device": describe_device(CPU), "versions": versions(),
                          "images_per_second": rows})


if __name__ == "__main__":
    main()
