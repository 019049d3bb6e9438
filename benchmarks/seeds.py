"""Run one config over several seeds and report the spread: a figure is a mean, not one lucky run.

    python benchmarks/seeds.py --config rn18_configs/24ep.yaml --seeds 5
    python benchmarks/seeds.py --config rn18_configs/24ep.yaml --seeds 3 --out runs/adamw \
        --training.optimizer adamw          # any other flag goes to every train.py run

Each seed s = 0..N-1 runs as its own `train.py` process into OUT/runs/seed<s>.
Run it again after an interruption: finished runs are kept, an unfinished one
resumes from its checkpoint. Writes seeds.json, seeds.md (mean, standard
deviation, min and max of each figure) and seeds.png (every seed's test accuracy
curve) into OUT.
"""
import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from fast_cifar.errors import UserError, exit_on_user_error
from fast_cifar.files import writable_folder, write_json, write_text
from fast_cifar.plots import integer_ticks, plt, save_figure

REPO = Path(__file__).resolve().parents[1]
FIGURES = {  # name in the table -> how to read it from results.json
    "test accuracy, last epoch (%)": lambda r: 100 * r["epochs"][-1]["test_accuracy"],
    "with flip TTA, last epoch (%)": lambda r: 100 * r["epochs"][-1].get("test_accuracy_flip_tta", float("nan")),
    "best test accuracy (%)": lambda r: 100 * r["best"]["test_accuracy"],
    "max LR": lambda r: r["max_lr"],
    "training (s)": lambda r: r["timings"]["training"],
    "evaluation (s)": lambda r: r["timings"]["evaluation"],
    "total (s)": lambda r: r["timings"]["total"],
}


def run_seed(config, seed, runs, overrides):
    """Train one seed unless it already finished; resume it if it was cut off. Returns its record."""
    folder = runs / f"seed{seed}"
    results = folder / "results.json"
    if results.is_file() and json.loads(results.read_text()).get("finished"):
        print(f"seed {seed}: finished earlier, kept ({results})")
        return json.loads(results.read_text())
    command = [sys.executable, str(REPO / "fast_cifar" / "train.py"), "--config", config, *overrides,
               "--training.seed", str(seed), "--output.dir", str(runs), "--output.name", f"seed{seed}"]
    if (folder / "checkpoint.pt").is_file():
        command += ["--training.resume", str(folder)]
    elif folder.exists():
        command += ["--output.overwrite", "true"]  # cut off before its first checkpoint: start it again
    print("$", " ".join(command[1:]), flush=True)
    if subprocess.run(command).returncode != 0:
        raise UserError(f"the run for seed {seed} failed (see its output above); run this command again to resume")
    return json.loads(results.read_text())


def spread(values):
    values = [v for v in values if v == v]  # NaN: a figure the run did not report
    if not values:
        return None
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def aggregate(records):
    return {name: spread([read(record) for record in records]) for name, read in FIGURES.items()}


def table(summary, config, seeds):
    lines = [f"`{config}` over seeds 0..{seeds - 1}:", "", "| figure | mean | std | min | max |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name, stats in summary.items():
        if stats is None:
            continue
        fmt = "{:.2e}" if name == "max LR" else "{:.2f}"
        lines.append(f"| {name} | " + " | ".join(fmt.format(stats[key]) for key in ("mean", "std", "min", "max"))
                     + " |")
    return "\n".join(lines) + "\n"


def plot(records, path):
    figure, axis = plt.subplots(figsize=(6, 4))
    for seed, record in enumerate(records):
        epochs = record["epochs"]
        axis.plot([e["epoch"] for e in epochs], [100 * e["test_accuracy"] for e in epochs], "-o", markersize=3,
                  label=f"seed {seed}")
    axis.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy, one curve per seed")
    integer_ticks(axis)
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    save_figure(figure, path)


@exit_on_user_error
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="train.py config file")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds, 0..N-1")
    parser.add_argument("--out", default="", help="output folder (default: benchmarks/results/seeds/<config>)")
    args, overrides = parser.parse_known_args(argv)
    if args.seeds < 1:
        raise UserError(f"--seeds must be 1 or more, got {args.seeds}")
    if not Path(args.config).is_file():
        raise UserError(f"config file not found: {args.config}")
    out = writable_folder(Path(args.out or REPO / "benchmarks" / "results" / "seeds" / Path(args.config).stem))
    records = [run_seed(args.config, seed, out / "runs", overrides) for seed in range(args.seeds)]
    summary = aggregate(records)
    write_json(out / "seeds.json", {"config": args.config, "overrides": overrides, "seeds": args.seeds,
                                    "summary": summary, "device": records[0]["device"],
                                    "versions": records[0]["versions"],
                                    "runs": [str(out / "runs" / f"seed{seed}") for seed in range(args.seeds)]})
    write_text(out / "seeds.md", table(summary, args.config, args.seeds))
    plot(records, out / "seeds.png")
    print(table(summary, args.config, args.seeds))
    print(f"wrote {out}/seeds.json, seeds.md, seeds.png")


if __name__ == "__main__":
    main()
