"""What importing the kit costs on top of torch: the median of --runs (5) fresh processes per module.

    python benchmarks/import_time.py --out benchmarks/results/startup_cpu

Each process times its one import (the interpreter's own start is not counted). Writes imports.json.
"""
import argparse
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from fast_cifar.files import writable_folder, write_json
from fast_cifar.results import describe_device, versions

MODULES = ("torch", "ffcv", "fast_cifar.data", "fast_cifar.train")
CODE = "import time; start = time.perf_counter(); import {}; print(time.perf_counter() - start)"


def import_seconds(module, runs=5):
    return [float(subprocess.run([sys.executable, "-c", CODE.format(module)], capture_output=True, text=True,
                                 check=True).stdout) for _ in range(runs)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for imports.json")
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per module")
    args = parser.parse_args(argv)
    seconds = {module: import_seconds(module, args.runs) for module in MODULES}
    medians = {module: round(statistics.median(runs), 3) for module, runs in seconds.items()}
    for module, median in medians.items():
        print(f"{module:18} {median:6.2f} s" + (f"  (+{median - medians['torch']:.2f} s on torch)"
                                                 if module != "torch" else ""))
    write_json(writable_folder(Path(args.out), "--out") / "imports.json",
               {"device": describe_device(torch.device("cpu")), "versions": versions(),
                "command": " ".join(["python", "benchmarks/import_time.py", *sys.argv[1:]]),
                "median_seconds": medians, "seconds": {m: [round(s, 3) for s in runs] for m, runs in seconds.items()}})


if __name__ == "__main__":
    main()
