"""Reading finished runs back and summarizing them: what benchmarks/ and scripts/fill_readme.py share.

A run's results.json, read with results.read_run, becomes a row of `FIGURES`; a set of runs
becomes figures with `spread` (mean, standard deviation, min, max over seeds); and
every table is drawn by `markdown_table`.
"""
import re
import statistics
from pathlib import Path

from fast_cifar.config import settings_of_kind

# A run's headline figures: name -> how to read it from a record (results.read_run checked its shape; None
# where the run has no such figure).
FIGURES = {
    "last-epoch test accuracy (%)": lambda r: 100 * r["epochs"][-1]["test_accuracy"],
    "with TTA (%)": lambda r: tta_accuracy(r["epochs"][-1]),
    "max LR": lambda r: r["max_lr"],
    "start-up (s)": lambda r: r["timings"].get("startup", {}).get("total"),
    "training (s)": lambda r: training_seconds(r),
    "end to end (s)": lambda r: r["timings"].get("end_to_end") or r["timings"]["total"],
    "training images/s": lambda r: training_images_per_second(r),
}


# An epoch's accuracies under test-time augmentation, the richest first: airbench's (flips and translations),
# train.py's multi-crop (the same views), its flip.
TTA_KEYS = ("test_accuracy_tta", "test_accuracy_multicrop_tta", "test_accuracy_flip_tta")


def training_images_per_second(record):
    """Training's images/s over every epoch a record holds (a resumed run's earlier ones too, each timed in
    its own process): the one definition every report reads."""
    if record["data"] is None:  # a record written before the data was read
        return None
    return record["data"]["train_images_per_epoch"] * len(record["epochs"]) / training_seconds(record)


def training_seconds(record):
    """Training's seconds over every epoch a record holds."""
    return sum(epoch["train_seconds"] for epoch in record["epochs"])


def tta_accuracy(epoch):
    """The test accuracy with the run's own test-time augmentation (airbench's: flips and translations;
    train.py's: the same with eval_multicrop_tta, else a flip), or None without one."""
    value = next((epoch[key] for key in TTA_KEYS if key in epoch), None)
    return None if value is None else 100 * value


def spread(values):
    """Mean, standard deviation, min and max of the values that are not None; None if none are."""
    values = [value for value in values if value is not None]
    if not values:
        return None
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def figures(records):
    return {name: spread([read(record) for record in records]) for name, read in FIGURES.items()}


def mean_std(figure, digits=2):
    """"mean ± std" over several runs, the value alone for one."""
    if figure is None:
        return ""
    return f"{figure['mean']:.{digits}f}" + (f" ± {figure['std']:.{digits}f}" if figure["n"] > 1 else "")


def markdown_table(header, rows, left=(0,)):
    """A Markdown table: the columns in `left` (text) left-aligned, the others (numbers) right-aligned."""
    align = ["---" if i in left or i - len(header) in left else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join("" if cell is None else str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def source_name(source):
    """A data source as reports name it: a path reduced to its last part, so no report holds the folders of
    the machine that made it ("image folder at /data/x/cifar10-jpeg.tar.gz" -> "... at cifar10-jpeg.tar.gz")."""
    kind, _, path = (source or "unknown").rpartition(" at ")
    return f"{kind} at {Path(path).name}" if kind else source or "unknown"


# Flags that say where a run read and wrote, not what it ran: left out of every published command. They are
# train.py's settings of kind "place", and the benchmarks' output folder.
WHERE_FLAGS = (*sorted(f"--{name}" for name in settings_of_kind("place")), "--out")


def published_command(command):
    """The run's command without the flags that name the machine's folders."""
    words, kept = command.split(), []
    while words:
        word = words.pop(0)
        if word in WHERE_FLAGS:
            words.pop(0) if words else None
        else:  # a config named by its absolute path (as benchmarks/sweep.py passes it) from the repository
            kept.append(re.sub(r"^/\S*/(rn18_configs/[^/\s]+)$", r"\1", word))
    return "python fast_cifar/" + " ".join(kept) if kept and kept[0] == "train.py" else " ".join(kept)


def machine(record):
    """The device and the versions that matter, in one line."""
    device, versions = record["device"], record["versions"]
    name = f"{device['name']} (CUDA {versions['cuda']})" if device["type"] == "cuda" else \
        f"CPU {device.get('model') or device['name']}, {device.get('cores')} cores"
    return f"{name}, torch {versions['torch']}, ffcv {versions['ffcv']}, Python {versions['python']}"
