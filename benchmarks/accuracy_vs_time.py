"""Best test accuracy against wall-clock: the recipe at 8, 12, 16, 24, 32 and 40 epochs.

    python benchmarks/accuracy_vs_time.py                       # on a GPU: the six rn18_configs
    python benchmarks/accuracy_vs_time.py --study.configs rn18_configs/8ep.yaml \\
        --study.overrides "--model.width 8 --data.train_subset 2000 --training.compile false"

Each configuration runs as its own `train.py` process, one after another, so each
pays its own start-up. Writes results.json (one row per run), table.md and
accuracy_vs_time.png into --study.out. Meant for a GPU; on a CPU, shrink the runs
with --study.overrides to check the command.
"""
import json
import shlex
import subprocess
import sys
from pathlib import Path

from fastargs import Param, Section

from fast_cifar.config import parse_config
from fast_cifar.errors import UserError, exit_on_user_error
from fast_cifar.files import write_json, write_text
from fast_cifar.plots import plt, save_figure

REPO = Path(__file__).resolve().parents[1]
EPOCH_CONFIGS = ",".join(f"rn18_configs/{n}ep.yaml" for n in (8, 12, 16, 24, 32, 40))


def declare_sections(config):
    Section("study", "Which runs and where the results go", config_descriptor=config).params(
        configs=Param(str, "comma-separated config files", default=EPOCH_CONFIGS),
        overrides=Param(str, "extra train.py flags for every run", default=""),
        out=Param(str, "results folder", default="benchmarks/results/accuracy_vs_time"),
    )


def run_config(config, overrides, out):
    name = Path(config).stem
    command = [sys.executable, str(REPO / "fast_cifar" / "train.py"), "--config", config,
               "--output.dir", str(out / "runs"), "--output.name", name, "--output.checkpoint", "false", *overrides]
    print("$", " ".join(command[1:]), flush=True)
    if subprocess.run(command).returncode != 0:
        raise UserError(f"the run of {config} failed (see its output above)")
    record = json.loads((out / "runs" / name / "results.json").read_text())
    return {"config": config, "epochs": len(record["epochs"]), "best_test_accuracy": record["best"]["test_accuracy"],
            "best_epoch": record["best"]["epoch"], "training_seconds": record["timings"]["training"],
            "evaluation_seconds": record["timings"]["evaluation"], "total_seconds": record["timings"]["total"],
            "device": record["device"]["name"], "data": record["data"]["source"]}


def plot(rows, path):
    figure, axis = plt.subplots(figsize=(6, 4))
    seconds = [r["training_seconds"] + r["evaluation_seconds"] for r in rows]
    axis.plot(seconds, [100 * r["best_test_accuracy"] for r in rows], "-o")
    for x, row in zip(seconds, rows):
        axis.annotate(f"{row['epochs']} ep", (x, 100 * row["best_test_accuracy"]), textcoords="offset points",
                      xytext=(4, -10))
    axis.set(xlabel="training + evaluation time (s)", ylabel="best test accuracy (%)",
             title=f"Accuracy against time ({rows[0]['device']})")
    axis.grid(alpha=0.3)
    save_figure(figure, path)


@exit_on_user_error
def main(argv=None):
    cfg = parse_config(declare_sections, argv, description=__doc__).study
    out = Path(cfg.out)
    rows = [run_config(config, shlex.split(cfg.overrides), out) for config in cfg.configs.split(",")]
    write_json(out / "results.json", {"overrides": cfg.overrides, "runs": rows})
    lines = ["| config | epochs | best test accuracy | at epoch | train + eval (s) | total wall-clock (s) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['config']} | {r['epochs']} | {100 * r['best_test_accuracy']:.2f}% | {r['best_epoch']} | "
              f"{r['training_seconds'] + r['evaluation_seconds']:.1f} | {r['total_seconds']:.1f} |" for r in rows]
    write_text(out / "table.md", f"Device: {rows[0]['device']}; data: {rows[0]['data']}\n\n" + "\n".join(lines) + "\n")
    plot(rows, out / "accuracy_vs_time.png")
    print((out / "table.md").read_text())


if __name__ == "__main__":
    main()
