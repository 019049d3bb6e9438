"""Fill README.md's Results section from a run's results.json.

    python scripts/fill_readme.py runs/RUN --fill.store benchmarks/results/NAME

--fill.store first copies results.json and the plots into a folder that is committed,
so the README's links work; the section is rewritten between its two markers.
"""
import shutil
import sys
from pathlib import Path

from fastargs import Param, Section

from fast_cifar.config import parse_config
from fast_cifar.errors import UserError, exit_on_user_error
from fast_cifar.files import write_text
from fast_cifar.report import machine, markdown_table, published_command, source_name, training_images_per_second
from fast_cifar.results import STAGES, read_run

START, END = "<!-- results:start -->", "<!-- results:end -->"
FILES = ("results.json", "loss_accuracy_plots.png", "lr_finder.png")
def declare_sections(config):
    Section("fill", "Where the results come from and go", config_descriptor=config).params(
        store=Param(str, "copy results.json and plots here first (a committed folder)", default=""),
        readme=Param(str, "the README to rewrite", default="README.md"),
    )


def render(record, folder, readme):
    epochs, timings, best = record["epochs"], record["timings"], record["best"]
    link = Path(folder).resolve().relative_to(Path(readme).resolve().parent)
    last = epochs[-1]
    tta = f"; with flip test-time augmentation {100 * last['test_accuracy_flip_tta']:.2f}%" \
        if "test_accuracy_flip_tta" in last else ""
    lines = [
        f"Measured on **{machine(record)}**, "
        f"data: {source_name(record['data']['source'])}, {record['started_at'][:10]}.",
        f"Command: `{published_command(record['command'])}` ([results.json]({link}/results.json)).",
        "",
        f"**Test accuracy at the last epoch: {100 * last['test_accuracy']:.2f}%** (epoch {last['epoch']} of "
        f"{len(epochs)}{tta}). Maximum over the epochs: {100 * best['test_accuracy']:.2f}% at epoch {best['epoch']} "
        f"(picked by the test set, so flattering).",
    ]
    rows = [[label, f"{timings.get(key):.2f}"] for key, label in STAGES.items() if timings.get(key) is not None]
    if timings.get("startup", {}).get("total") is not None:
        rows.append(["start-up: process start to the first training step", f"{timings['startup']['total']:.2f}"])
    use = record["hardware_use"] or {}
    if use.get("achieved_tflops"):
        mfu = f", {100 * use['mfu']:.1f}% of its bf16 peak (MFU)" if use["mfu"] else ""
        rows.append(["training's arithmetic", f"{use['achieved_tflops']:.1f} TFLOP/s{mfu}"])
    rows.append(["training throughput", f"{training_images_per_second(record):,.0f} images/s"])
    end_to_end = timings.get("time_to_accuracy_end_to_end", {})
    missed = [f"{100 * float(target):g}%" for target, seconds in timings["time_to_accuracy"].items() if seconds is None]
    for target, seconds in timings["time_to_accuracy"].items():
        if seconds is None:
            continue
        rows.append([f"time to {100 * float(target):g}% test accuracy: training and evaluation", f"{seconds:.2f}"])
        if end_to_end.get(target) is not None:
            rows.append([f"time to {100 * float(target):g}% test accuracy: end to end, from the run's start",
                         f"{end_to_end[target]:.2f}"])
    if missed:
        rows.append(["test accuracy not reached", ", ".join(missed)])
    lines += ["", markdown_table(["stage", "seconds"], rows).rstrip()]
    lines += ["", f"![loss and accuracy curves]({link}/loss_accuracy_plots.png)"]
    return "\n".join(lines)


@exit_on_user_error
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-"):
        raise UserError("usage: fill_readme.py RUN_FOLDER [--fill.store DIR] [--fill.readme README.md]")
    run, cfg = Path(argv[0]), parse_config(declare_sections, argv[1:], description=__doc__).fill
    record = read_run(run)
    if not record["finished"]:
        raise UserError(f"{run / 'results.json'} is from an unfinished run")
    folder = Path(cfg.store) if cfg.store else run
    if cfg.store:
        folder.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            if (run / name).exists():
                shutil.copyfile(run / name, folder / name)
    text = Path(cfg.readme).read_text()
    if START not in text or END not in text:
        raise UserError(f"{cfg.readme} has no '{START}' ... '{END}' section to fill")
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    write_text(cfg.readme, f"{before}{START}\n{render(record, folder, cfg.readme)}\n{END}{after}")
    print(f"filled {cfg.readme} from {run / 'results.json'}")


if __name__ == "__main__":
    main()
