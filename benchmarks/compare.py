"""Compare finished (or running) runs side by side: is this change faster, and is it as accurate?

    python benchmarks/compare.py runs/baseline runs/adamw [...] [--out DIR]

Reads each run folder's results.json and writes, into --out (default: the runs'
common parent, as compare/):
- comparison.md and comparison.json: device, precision, compile, loader, the
  config values that differ between the runs, the max LR, last-epoch and best test
  accuracy, flip TTA, every timing stage, images/s, time to each accuracy target
  (training only, and end to end), and each run's training time against the first's;
- accuracy.png (test accuracy against epoch and against wall-clock) and loss.png
  (train and test loss against epoch), the runs overlaid.
"""
import argparse
import json
from pathlib import Path

from fast_cifar.errors import UserError, exit_on_user_error
from fast_cifar.files import writable_folder, write_json, write_text
from fast_cifar.report import FIGURES, machine, markdown_table, read_run
from fast_cifar.plots import integer_ticks, plt, save_figure
from fast_cifar.results import STAGES

IGNORED_KEYS = {"output.dir", "output.name", "output.overwrite", "training.resume"}  # where, not what


def flat_config(record):
    return {f"{section}.{key}": value for section, values in record["config"].items()
            for key, value in values.items() if f"{section}.{key}" not in IGNORED_KEYS}


def differing_config(records):
    """Only the settings whose values are not the same in every run."""
    flats = [flat_config(record) for record in records]
    keys = sorted(set().union(*flats))
    return {key: [flat.get(key) for flat in flats] for key in keys if len({json.dumps(f.get(key)) for f in flats}) > 1}


def summarize(name, record, first_training_seconds):
    epochs, timings = record["epochs"], record.get("timings", {})
    last = epochs[-1] if epochs else {}
    images_per_second = FIGURES["training images/s"](record)  # as every report reads it
    training = timings.get("training")
    use = record.get("hardware_use") or {}
    return {
        "run": name,
        "finished": record.get("finished", False),
        "device": machine(record),
        "precision": record.get("precision", {}).get("compute", record["config"]["training"]["precision"]),
        "compile": record["config"]["training"]["compile"],
        "loader": record.get("loader", record["config"]["data"]["loader"]),  # the one used, `auto` resolved
        "max_lr": record.get("max_lr"),
        "epochs": f"{len(epochs)}/{record['config']['training']['epochs']}",
        "last_test_accuracy": last.get("test_accuracy"),
        "last_test_accuracy_flip_tta": last.get("test_accuracy_flip_tta"),
        "best_test_accuracy": record.get("best", {}).get("test_accuracy"),
        "best_epoch": record.get("best", {}).get("epoch"),
        "seconds": {stage: timings.get(stage) for stage in STAGES},
        "images_per_second": images_per_second and round(images_per_second),
        "startup_seconds": FIGURES["start-up (s)"](record),
        **{key: use.get(key) for key in ("flops_per_image", "achieved_tflops", "mfu")},
        "time_to_accuracy": timings.get("time_to_accuracy", {}),
        "time_to_accuracy_end_to_end": timings.get("time_to_accuracy_end_to_end", {}),
        "training_time_ratio": round(training / first_training_seconds, 3)
        if training and first_training_seconds else None,
    }


def compare(folders):
    records = [read_run(folder) for folder in folders]
    names = unique_names(folders)
    first_training = records[0].get("timings", {}).get("training")
    rows = [summarize(name, record, first_training) for name, record in zip(names, records)]
    machines = {json.dumps([record["device"], record["versions"]], sort_keys=True) for record in records}
    notes = []
    if len(machines) > 1:
        notes.append("These runs come from different devices or versions: their times are not like for like.")
    unfinished = [row["run"] for row in rows if not row["finished"]]
    if unfinished:
        notes.append(f"Unfinished (figures so far): {', '.join(unfinished)}.")
    lacking = [f"{name} ({', '.join(losses)})" for name, record in zip(names, records)
               if (losses := missing_losses(record))]
    if lacking:  # peers' records (plain PyTorch, airbench) keep fewer figures: compared on what both have
        notes.append(f"Not recorded, so not plotted: {'; '.join(lacking)}.")
    return {"runs": rows, "differing_config": differing_config(records), "notes": notes}, records, names


def unique_names(folders):
    names = [Path(folder).name for folder in folders]
    return names if len(set(names)) == len(names) else [str(folder) for folder in folders]


def percent(value):
    return "-" if value is None else f"{100 * value:.2f}%"


def seconds(value):
    return "-" if value is None else f"{value:.1f}"


def table(comparison):
    """The runs as columns, a row per figure."""
    rows, differing, lines = comparison["runs"], comparison["differing_config"], []

    def add(label, values):
        lines.append([label, *values])

    for key in ("device", "precision", "compile", "loader", "epochs"):
        add(key, [row[key] for row in rows])
    for key, values in differing.items():
        add(f"`{key}`", values)
    add("max LR", ["-" if row["max_lr"] is None else f"{row['max_lr']:.2e}" for row in rows])
    add("test accuracy, last epoch", [percent(row["last_test_accuracy"]) for row in rows])
    add("with flip TTA, last epoch", [percent(row["last_test_accuracy_flip_tta"]) for row in rows])
    add("best test accuracy (epoch)", [f"{percent(row['best_test_accuracy'])} ({row['best_epoch']})" for row in rows])
    for stage, label in STAGES.items():
        add(f"{label} (s)", [seconds(row["seconds"][stage]) for row in rows])
    add("start-up: process start to first step (s)", [seconds(row["startup_seconds"]) for row in rows])
    add("training images/s", ["-" if row["images_per_second"] is None else f"{row['images_per_second']:,}"
                              for row in rows])
    add("training TFLOP/s", ["-" if row["achieved_tflops"] is None else f"{row['achieved_tflops']:.2f}"
                             for row in rows])
    add("MFU (of the bf16 peak)", ["unknown" if row["mfu"] is None else f"{100 * row['mfu']:.1f}%" for row in rows])
    targets = sorted({target for row in rows for target in row["time_to_accuracy"]}, key=float)
    for target in targets:
        add(f"time to {100 * float(target):g}%: training / end to end (s)",
            [f"{seconds(row['time_to_accuracy'].get(target))} / {seconds(row['time_to_accuracy_end_to_end'].get(target))}"
             for row in rows])
    add("training time vs the first run", ["-" if row["training_time_ratio"] is None
                                           else f"{row['training_time_ratio']:.2f}x" for row in rows])
    header = ["", *(row["run"] + ("" if row["finished"] else " (unfinished)") for row in rows)]
    return markdown_table(header, lines) + "\n" + "\n".join(comparison["notes"]) + "\n"


def missing_losses(record):
    return [key for key in ("train_loss", "test_loss") if not all(key in epoch for epoch in record["epochs"])]


def plot(records, names, out):
    figure, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(11, 4))
    for name, record in zip(names, records):
        epochs = record["epochs"]
        accuracy = [100 * e["test_accuracy"] for e in epochs]
        by_epoch.plot([e["epoch"] for e in epochs], accuracy, "-o", markersize=3, label=name)
        wall = [e.get("elapsed_seconds") for e in epochs]
        if None in wall:  # older records: training and evaluation time only
            wall = [sum(x["train_seconds"] + x["eval_seconds"] for x in epochs[:i + 1]) for i in range(len(epochs))]
        by_time.plot(wall, accuracy, "-o", markersize=3, label=name)
    by_epoch.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy by epoch")
    integer_ticks(by_epoch)
    by_time.set(xlabel="seconds since the run started", ylabel="test accuracy (%)", title="Test accuracy by wall-clock")
    for axis in (by_epoch, by_time):
        axis.grid(alpha=0.3)
        axis.legend()
    save_figure(figure, out / "accuracy.png")

    figure, axis = plt.subplots(figsize=(6, 4))
    for index, (name, record) in enumerate(zip(names, records)):
        epochs, color = record["epochs"], f"C{index}"
        for key, style in (("train_loss", "-"), ("test_loss", "--")):
            if key not in missing_losses(record):  # the notes name what is missing
                axis.plot([e["epoch"] for e in epochs], [e[key] for e in epochs], style, color=color,
                          label=f"{name} {key.split('_')[0]}")
    axis.set(xlabel="epoch", ylabel="loss", title="Train (solid) and test (dashed) loss")
    integer_ticks(axis)
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    save_figure(figure, out / "loss.png")


@exit_on_user_error
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders, each with a results.json")
    parser.add_argument("--out", default="", help="output folder (default: compare/ beside the first run)")
    args = parser.parse_args(argv)
    if len(args.runs) < 2:
        raise UserError("give two run folders or more to compare")
    comparison, records, names = compare(args.runs)
    out = writable_folder(Path(args.out) if args.out else Path(args.runs[0]).resolve().parent / "compare")
    write_json(out / "comparison.json", comparison)
    write_text(out / "comparison.md", table(comparison))
    plot(records, names, out)
    print(table(comparison))
    print(f"wrote {out}/comparison.md, comparison.json, accuracy.png, loss.png")


if __name__ == "__main__":
    main()
