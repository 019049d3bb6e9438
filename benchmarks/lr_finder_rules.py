"""How much does the LR finder's suggestion move between seeds, under each rule?

    python benchmarks/lr_finder_rules.py RUN_DIR [RUN_DIR ...] --out benchmarks/results/lr_finder/h100

Reads each run's recorded sweep (results.json's lr_finder: LRs, smoothed losses) and applies
each rule to it, so every rule is judged on the same sweeps. The valley is where the smoothed
loss stays within 5% of its minimum:
- minimum / 3: the LR at the smoothed loss's minimum, divided by 3 (the rule the tuning study ran);
- valley edge / 8: the first LR at which the smoothed loss rises out of the valley, divided by 8;
- valley centre: the geometric mean of the valley's two edges;
- valley start x 5: the first LR whose smoothed loss is within 5% of the minimum, times 5 (train.py's
  rule; its sweep ends at the valley's far edge, so runs made with it hold the sweep up to there).
Runs are grouped by their config apart from the seed. Writes rules.json and rules.md: per rule,
the geometric mean of the suggested max LR, the standard deviation of its log10 over all runs, and
the mean ratio between two seeds of one config.
"""
import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from fast_cifar.errors import exit_on_user_error
from fast_cifar.files import writable_folder, write_json, write_text
from fast_cifar.report import markdown_table, read_run


def valley(sweep, rise=0.05):
    """The valley's two edges, as find_lr draws them: where the smoothed loss first comes within `rise` of its
    minimum, and the first LR after that at which it rises above (the sweep's end, for sweeps that went on)."""
    if "valley_start_lr" in sweep:
        return sweep["valley_start_lr"], sweep["edge_lr"]
    lrs, smoothed, best = sweep["lrs"], sweep["smoothed_losses"], math.inf
    end = len(lrs) - 1
    for index, loss in enumerate(smoothed):
        if loss > (1 + rise) * best:
            end = index
            break
        best = min(best, loss)
    start = next(lr for lr, loss in zip(lrs, smoothed[:end]) if loss <= (1 + rise) * best)
    return start, lrs[end]


RULES = {
    "minimum / 3": lambda sweep: sweep["min_loss_lr"] / 3,
    "valley edge / 8": lambda sweep: valley(sweep)[1] / 8,
    "valley centre": lambda sweep: math.sqrt(valley(sweep)[0] * valley(sweep)[1]),
    "valley start x 5": lambda sweep: valley(sweep)[0] * 5,
}


def group_key(record):
    config = json.loads(json.dumps(record["config"]))
    for section, key in (("training", "seed"), ("output", "name"), ("output", "dir"), ("data", "path")):
        config[section].pop(key, None)
    return json.dumps(config, sort_keys=True)


def spread(records, rule):
    suggestions = [math.log10(rule(record["lr_finder"])) for record in records]
    groups = {}
    for record, value in zip(records, suggestions):
        groups.setdefault(group_key(record), []).append(value)
    gaps = [max(values) - min(values) for values in groups.values() if len(values) > 1]
    return {"geometric_mean_lr": 10 ** statistics.mean(suggestions), "std_log10": statistics.pstdev(suggestions),
            "mean_seed_to_seed_ratio": 10 ** statistics.mean(gaps) if gaps else None,
            "runs": len(suggestions), "groups_with_several_seeds": len(gaps),
            "suggestions": [10 ** value for value in suggestions]}


@exit_on_user_error
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders whose results.json holds an lr_finder sweep")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    every = {folder: read_run(folder) for folder in args.runs}
    records = [record for record in every.values() if record.get("lr_finder")]
    out = writable_folder(Path(args.out))
    summary = {name: spread(records, rule) for name, rule in RULES.items()}
    # The sweep's length: steps recorded, and those a sweep from 1e-4 that ends at the valley's far edge takes.
    lengths = {"recorded_steps": statistics.mean(len(r["lr_finder"]["lrs"]) for r in records),
               "steps_from_1e-4_to_the_edge": statistics.mean(
                   sum(1e-4 <= lr <= valley(r["lr_finder"])[1] for lr in r["lr_finder"]["lrs"]) for r in records)}
    device = records[0]["device"]
    result = {"rules": summary, "sweep_lengths": lengths, "runs": {
        folder: {"max_lr": record["max_lr"], "last_test_accuracy": record["epochs"][-1]["test_accuracy"]}
        for folder, record in every.items()}, "device": device, "versions": records[0]["versions"],
              "command": " ".join(["python benchmarks/lr_finder_rules.py", *(sys.argv[1:] if argv is None else argv)])}
    lines = [f"{len(records)} sweeps on {device['name']} ({device['type']})", "",
             "| rule | max LR (geometric mean) | std of log10 | mean ratio between seeds |",
             "| --- | ---: | ---: | ---: |"]
    for name, figures in summary.items():
        ratio = figures["mean_seed_to_seed_ratio"]
        lines.append(f"| {name} | {figures['geometric_mean_lr']:.2e} | {figures['std_log10']:.3f} | "
                     + (f"{ratio:.2f}x |" if ratio else "- |"))
    lines += ["", f"Sweep length: {lengths['recorded_steps']:.0f} steps recorded on average; from LR 1e-4 to the "
                  f"valley's far edge, {lengths['steps_from_1e-4_to_the_edge']:.0f}.", "",
              "Every run given, with the max LR it trained at:", "",
              markdown_table(["run", "seed", "finder", "max LR", "last-epoch test accuracy (%)"], [
                  ["/".join(Path(folder).parts[-2:]), record["config"]["training"]["seed"],
                   "on" if record["config"]["lr_finder"]["enabled"] else "off", f"{record['max_lr']:.2e}",
                   f"{100 * record['epochs'][-1]['test_accuracy']:.2f}"] for folder, record in every.items()])]
    write_json(out / "rules.json", result)
    write_text(out / "rules.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
