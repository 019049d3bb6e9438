"""A stand-in for fast_cifar/train.py that sweep.py can run in milliseconds: it takes the same flags and writes
a finished results.json whose figures follow from them, so the tests of the sweep's bookkeeping (seeds, jobs,
reruns, failures, skips, ratios, reports, a stop) need not train. `--fail MESSAGE` fails the way train.py does.
$STAND_IN_TEMPLATE: a results.json of the kit's shape, every key None, which it fills.
The real train.py, plain_pytorch.py and ResNet-9 runs go through sweep.py in tests/scripts/test_gpu_run.py."""
import json
import os
import sys
import time
from pathlib import Path


def main(argv):
    flags = dict(zip(argv[::2], argv[1::2]))  # "--section.key value" pairs; the last one given wins
    if "--fail" in flags:
        print(f"error: {flags['--fail']}", file=sys.stderr)
        sys.exit(2)
    config = {"training": {"seed": 0, "label_smoothing": 0.1, "epochs": 2}}
    for flag, value in flags.items():
        if flag.count(".") == 1 and flag.startswith("--") and flag[2:].split(".")[0] not in ("output", "data"):
            section, key = flag[2:].split(".")
            config.setdefault(section, {})[key] = json.loads(value) if value[:1].isdigit() else value
    seed, smoothing = config["training"]["seed"], config["training"]["label_smoothing"]
    accuracy = 0.5 + 0.01 * seed + (0.05 if smoothing == 0 else 0)
    training, epochs = 1.0 + seed, config["training"]["epochs"]
    epochs = [{"epoch": epoch, "test_accuracy": accuracy, "train_seconds": training / epochs, "eval_seconds": 0.0,
               "elapsed_seconds": epoch * training / epochs} for epoch in range(1, epochs + 1)]
    # An empty record of the kit's shape, written by the test (importing the kit here would cost torch's import)
    record = json.loads(Path(os.environ["STAND_IN_TEMPLATE"]).read_text()) | {
        "finished": True, "command": "train.py", "started_at": "2026-12-04",
        "config": config, "max_lr": 0.01,
        "device": {"type": "cpu", "name": "x86_64", "model": "a test CPU", "cores": 2,
                   "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},  # what sweep.py gave the run
        "versions": {"python": "3", "torch": "2", "ffcv": "1", "cuda": None},
        "data": {"source": "synthetic", "train_images_per_epoch": 1000},
        "model": {"arch": "resnet18", "parameters": 11_000_000},
        "epochs": epochs, "best": {"epoch": 1, "test_accuracy": accuracy},
        "last": {"epoch": epochs[-1]["epoch"], "test_accuracy": accuracy},
        "timings": {"training": training, "total": 2 * training, "end_to_end": 2 * training, "startup": {"total": 0.5}},
        "hardware_use": {"flops_per_image": 1e9, "achieved_tflops": 0.05},
    }
    folder = Path(flags["--output.dir"]) / flags["--output.name"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pid").write_text(str(os.getpid()))  # so a test can tell whether it is still running
    time.sleep(float(os.environ.get("STAND_IN_SECONDS", 0)))  # a run that takes time, to be stopped in
    (folder / "results.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(sys.argv[1:])
