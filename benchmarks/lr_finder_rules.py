"""How much does the LR finder's suggestion move between seeds, under each rule?

    python benchmarks/lr_finder_rules.py RUN_DIR [RUN_DIR ...] --out benchmarks/results/lr_finder/h100

Reads each run's recorded sweep (results.json's lr_finder: LRs, smoothed losses) and applies
each rule to it, so every rule is judged on the same sweeps:
- minimum / 3: the LR at the smoothed loss's minimum, divided by 3 (the rule the tuning study ran);
- edge / 8: the first LR at which the smoothed loss rises 5% above its running minimum, divided by 8
  (train.py's rule; its sweep ends there, so runs made with it hold the sweep up to the edge).
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
from fast_cifar.results import read_run


def minimum_over_3(sweep):
    return sweep["min_loss_lr"] / 3


def edge_over_8(sweep, rise=0.05):
    if "edge_lr" in sweep:  # a sweep that stopped at its edge
        return sweep["edge_lr"] / 8
    best = math.inf
    for lr, smoothed in zip(sweep["lrs"], sweep["smoothed_losses"]):
        if smoothed > (1 + rise) * best:
            return lr / 8
        best = min(best, smoothed)
    return sweep["lrs"][-1] / 8


RULES = {"minimum / 3": minimum_over_3, "edge / 8": edge_over_8}


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
    records = [record for record in map(read_run, args.runs) if record.get("lr_finder")]
    out = writable_folder(Path(args.out))
    summary = {name: spread(records, rule) for name, rule in RULES.items()}
    device = records[0]["device"]
    result = {"rules": summary, "runs": args.runs, "device": device, "versions": records[0]["versions"],
              "command": " ".join(["python benchmarks/lr_finder_rules.py", *(sys.argv[1:] if argv is None else argv)])}
    lines = [f"{len(records)} sweeps on {device['name']} ({device['type']})", "",
             "| rule | max LR (geometric mean) | std of log10 | mean ratio between seeds |",
             "| --- | ---: | ---: | ---: |"]
    for name, figures in summary.items():
        ratio = figures["mean_seed_to_seed_ratio"]
        lines.append(f"| {name} | {figures['geometric_mean_lr']:.2e} | {figures['std_log10']:.3f} | "
                     + (f"{ratio:.2f}x |" if ratio else "- |"))
    write_json(out / "rules.json", result)
    write_text(out / "rules.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
