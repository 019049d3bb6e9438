"""Compare finished (or running) runs side by side: is this change faster, and is it as accurate?

    python benchmarks/compare.py runs/baseline runs/adamw [...] [--out DIR]

Writes into --out (default: compare/ beside the first run) comparison.md and comparison.json, a row per
figure and a column per run (benchmarks/README.md lists them), and curves.png: accuracy and loss by epoch.
"""
import argparse
import json
from pathlib import Path

from fast_cifar.config import settings_of_kind
from fast_cifar.errors import UserError, exit_on_user_error
from fast_cifar.files import writable_folder, write_json, write_text
from fast_cifar.plots import integer_ticks, plt, save_figure
from fast_cifar.report import FIGURES, machine, markdown_table, training_seconds
from fast_cifar.results import STAGES, read_run

IGNORED_KEYS = settings_of_kind("place")  # where, not what
LOSSES = ("train_loss", "test_loss")


def differing_config(records):
    """Only the settings whose values are not the same in every run."""
    flats = [{f"{section}.{key}": value for section, values in record["config"].items()
              for key, value in values.items() if f"{section}.{key}" not in IGNORED_KEYS} for record in records]
    keys = sorted(set().union(*flats))
    return {key: [flat.get(key) for flat in flats] for key in keys if len({json.dumps(f.get(key)) for f in flats}) > 1}


def figure_rows(records):
    """{label: a value per run}, numbers where they are numbers; None where a run does not have it."""
    def each(read):
        return [read(record) for record in records]

    timings = [record["timings"] for record in records]
    rows = {"device": each(machine),
            "precision": each(lambda r: (r["precision"] or {}).get("compute", r["config"]["training"]["precision"])),
            "compile": each(lambda r: r["config"]["training"]["compile"]),
            "loader": each(lambda r: r["loader"] or r["config"]["data"]["loader"]),  # the one used, where known
            "epochs": each(lambda r: f"{len(r['epochs'])}/{r['config']['training']['epochs']}"),
            **{f"`{key}`": values for key, values in differing_config(records).items()},
            **{name: each(read) for name, read in FIGURES.items()},
            "best test accuracy (%)": each(lambda r: r["best"] and 100 * r["best"]["test_accuracy"]),
            "interpreter and imports (s)": each(
                lambda r: r["timings"].get("startup", {}).get("interpreter_and_imports")),
            **{f"{label} (s)": [timing.get(stage) for timing in timings] for stage, label in STAGES.items()},
            "compiled graphs from cache / built": each(lambda r: r["compile_cache"] and (
                f"{r['compile_cache']['inductor_hits']} / {r['compile_cache']['inductor_misses']}")),
            "training TFLOP/s": each(lambda r: (r["hardware_use"] or {}).get("achieved_tflops")),
            "MFU (% of the bf16 peak)": each(lambda r: mfu_percent(r["hardware_use"]))}
    for target in sorted({target for timing in timings for target in timing.get("time_to_accuracy", {})}, key=float):
        rows[f"time to {100 * float(target):g}%: training / end to end (s)"] = [
            [timing.get(key, {}).get(target) for key in ("time_to_accuracy", "time_to_accuracy_end_to_end")]
            for timing in timings]
    rows["training time / the first run's"] = each(lambda r: training_seconds(r) / training_seconds(records[0]))
    return rows


def mfu_percent(use):
    return 100 * use["mfu"] if use and use["mfu"] is not None else None


def notes_on(records, names):
    notes = []
    if len({json.dumps([record["device"], record["versions"]], sort_keys=True) for record in records}) > 1:
        notes.append("These runs come from different devices or versions: their times are not like for like.")
    if unfinished := [name for name, record in zip(names, records) if not record["finished"]]:
        notes.append(f"Unfinished (figures so far): {', '.join(unfinished)}.")
    if lacking := [f"{name} ({', '.join(missing_losses(record))})" for name, record in zip(names, records)
                   if missing_losses(record)]:  # peers' records (plain PyTorch, airbench) keep fewer figures
        notes.append(f"Not recorded, so not plotted: {'; '.join(lacking)}.")
    return notes


def missing_losses(record):
    return [key for key in LOSSES if not all(key in epoch for epoch in record["epochs"])]


def cell(value):
    if value is None:
        return "-"
    if isinstance(value, list):
        return " / ".join(map(cell, value))
    if isinstance(value, float):
        return f"{value:.2e}" if abs(value) < 0.01 else f"{value:,.2f}"
    return str(value)


def plot(records, names, path):
    """Test accuracy by epoch and by wall-clock, and train (solid) and test (dashed) loss by epoch."""
    figure, axes = plt.subplots(1, 3, figsize=(16, 4))
    for index, (name, record) in enumerate(zip(names, records)):
        epochs, accuracy = record["epochs"], [100 * e["test_accuracy"] for e in record["epochs"]]
        for axis, x in zip(axes, ("epoch", "elapsed_seconds")):
            axis.plot([e.get(x) for e in epochs], accuracy, "-o", markersize=3, color=f"C{index}", label=name)
        for key, style in zip(LOSSES, ("-", "--")):
            if key not in missing_losses(record):  # the notes name what is missing
                axes[2].plot([e["epoch"] for e in epochs], [e[key] for e in epochs], style, color=f"C{index}",
                             label=f"{name} {key.split('_')[0]}")
    titles = ("Test accuracy by epoch", "Test accuracy by wall-clock", "Train (solid) and test (dashed) loss")
    for axis, title, x, y in zip(axes, titles, ("epoch", "seconds since the run started", "epoch"),
                                 ("test accuracy (%)", "test accuracy (%)", "loss")):
        axis.set(xlabel=x, ylabel=y, title=title)
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    for axis in axes[::2]:  # by epoch
        integer_ticks(axis)
    save_figure(figure, path)


@exit_on_user_error
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders, each with a results.json")
    parser.add_argument("--out", default="", help="output folder (default: compare/ beside the first run)")
    args = parser.parse_args(argv)
    if len(args.runs) < 2:
        raise UserError("give two run folders or more to compare")
    records = [read_run(folder) for folder in args.runs]
    names = [Path(folder).name for folder in args.runs]
    names = names if len(set(names)) == len(names) else list(args.runs)
    rows, notes = figure_rows(records), notes_on(records, names)
    out = writable_folder(Path(args.out) if args.out else Path(args.runs[0]).resolve().parent / "compare")
    write_json(out / "comparison.json", {"runs": names, "figures": rows, "differing_config": differing_config(records),
                                         "notes": notes})
    header = ["", *(name + ("" if record["finished"] else " (unfinished)") for name, record in zip(names, records))]
    table = markdown_table(header, [[label, *map(cell, values)] for label, values in rows.items()]) + "\n".join(notes)
    write_text(out / "comparison.md", table + "\n")
    plot(records, names, out / "curves.png")
    print(table)
    print(f"wrote {out}/comparison.md, comparison.json, curves.png")


if __name__ == "__main__":
    main()
