"""How much does the LR finder's suggestion move between seeds, and how well does each rule's pick train?

    python benchmarks/lr_finder_rules.py RUN_DIR [RUN_DIR ...] [--sweeps RUN_DIR ...] --out DIR

Reads each run's recorded sweep (results.json's lr_finder: LRs, smoothed losses) and applies
each rule to it, so every rule is judged on the same sweeps. The valley is where the smoothed
loss stays within 5% of its minimum:
- minimum / 3: the LR at the smoothed loss's minimum, divided by 3 (the tuning study's, train.py's);
- valley edge / 8: the first LR at which the smoothed loss rises out of the valley, divided by 8;
- valley centre: the geometric mean of the valley's two edges;
- valley start x 5: the first LR whose smoothed loss is within 5% of the minimum, times 5.
A sweep depends on the seed and on the settings it trains with, not on the epochs or the rule, so
runs that differ only in those share their seed's sweep, and identical sweeps count once. A run
trained at one rule's pick from its seed's sweep (with the finder, or with it off and that LR as
training.lr) counts for that rule's accuracy. --sweeps: runs whose sweep counts but whose accuracy
does not (cut short after the sweep). Writes rules.json and rules.md: per rule, the geometric mean
of the suggested max LR, the standard deviation of its log10 over the sweeps, the ratio between the
highest and lowest seed's (averaged over configurations), and the last-epoch accuracy of the runs at its pick.
"""
import argparse
import copy
import functools
import json
import math
import statistics
import sys
from pathlib import Path

from fast_cifar.config import as_dict, declare_train_sections, parse_config
from fast_cifar.errors import UserError, exit_on_user_error
from fast_cifar.files import writable_folder, write_json, write_text
from fast_cifar.lr_finder import past_the_valley, valley_start
from fast_cifar.report import markdown_table, mean_std, read_run, spread

# Settings that act only after the sweep: runs differing in these alone share their seed's sweep.
AFTER_THE_SWEEP = {"training": ("epochs", "lr", "pct_start", "seed", "resume", "ema_decay", "ema_start_epoch",
                                "eval_flip_tta", "eval_multicrop_tta"), "output": None,
                   "lr_finder": ("enabled", "anchor", "multiplier", "divisor"), "data": ("path",)}


def valley(sweep, rise=0.05):
    """The valley's two edges, as find_lr draws them: where the smoothed loss first comes within `rise` of its
    minimum, and the first LR after that at which it rises above (the sweep's end, for sweeps that went on).
    Sweeps that recorded their edges give them; older ones are worked out from the smoothed losses."""
    lrs, smoothed = sweep["lrs"], sweep["smoothed_losses"]
    end = next((index for index in range(1, len(smoothed))
                if past_the_valley(smoothed[index], min(smoothed[:index]), rise)), len(lrs) - 1)
    return (sweep.get("valley_start_lr", valley_start(lrs[:end + 1], smoothed[:end + 1], rise)),
            sweep.get("edge_lr", lrs[end]))


RULES = {
    "minimum / 3": lambda sweep: sweep["min_loss_lr"] / 3,
    "valley edge / 8": lambda sweep: valley(sweep)[1] / 8,
    "valley centre": lambda sweep: math.sqrt(valley(sweep)[0] * valley(sweep)[1]),
    "valley start x 5": lambda sweep: valley(sweep)[0] * 5,
}


@functools.cache
def defaults():
    return as_dict(parse_config(declare_train_sections, []))


def sweep_setting(record):
    """The configuration that shapes a sweep, apart from the seed: its key as text. A setting that a record
    lacks (it was added later) ran at its default."""
    config = copy.deepcopy(defaults())
    for section, values in record["config"].items():
        config.setdefault(section, {}).update(values)
    config["data"]["loader"] = record.get("loader", config["data"]["loader"])  # the one used, `auto` resolved
    for section, keys in AFTER_THE_SWEEP.items():
        for key in (keys or list(config.get(section, {}))):
            config.get(section, {}).pop(key, None)
    return json.dumps(config, sort_keys=True)


def sweep_key(record):
    """(setting, seed): runs with the same key ran the same sweep."""
    return sweep_setting(record), record["config"]["training"]["seed"]


def distinct_sweeps(records):
    """[((setting, seed), sweep)], each identical sweep once (the first run's)."""
    sweeps = {}
    for record in records:
        if record.get("lr_finder"):
            sweeps.setdefault(json.dumps(record["lr_finder"]["losses"]), (sweep_key(record), record["lr_finder"]))
    return list(sweeps.values())


def rule_spread(sweeps, rule):
    suggestions = [(key, math.log10(rule(sweep))) for key, sweep in sweeps]
    by_setting = {}
    for (setting, _), value in suggestions:
        by_setting.setdefault(setting, []).append(value)
    gaps = [max(values) - min(values) for values in by_setting.values() if len(values) > 1]
    values = [value for _, value in suggestions]
    return {"geometric_mean_lr": 10 ** statistics.mean(values), "std_log10": statistics.pstdev(values),
            "highest_to_lowest_seed": 10 ** statistics.mean(gaps) if gaps else None, "sweeps": len(values),
            "suggestions": [{"seed": seed, "max_lr": 10 ** value} for (_, seed), value in suggestions]}


def rule_of(record, sweeps):
    """The rule whose pick the run trained at: from its own sweep, or else from its seed's, or None."""
    own_key = sweep_key(record)
    sweep = record.get("lr_finder") or next((sweep for key, sweep in sweeps if key == own_key), None)
    if sweep is None:
        return None
    return next((name for name, rule in RULES.items() if abs(math.log(record["max_lr"] / rule(sweep))) < 1e-3), None)


def rules_table(summary):
    rows = [[name, f"{figures['geometric_mean_lr']:.2e}", f"{figures['std_log10']:.3f}",
             f"{figures['highest_to_lowest_seed']:.2f}x" if figures["highest_to_lowest_seed"] else "-",
             mean_std(figures["last_test_accuracy"]),
             figures["last_test_accuracy"]["n"] if figures["last_test_accuracy"] else 0]
            for name, figures in summary.items()]
    return markdown_table(["rule", "max LR (geometric mean)", "std of log10", "highest / lowest seed",
                           "last-epoch test accuracy at its pick (%)", "runs"], rows)


def run_table(runs, picks):
    rows = [["/".join(Path(folder).parts[-2:]), record["config"]["training"]["seed"], len(record["epochs"]),
             "on" if record["config"]["lr_finder"]["enabled"] else "off", f"{record['max_lr']:.2e}",
             picks[folder] or "", f"{100 * record['epochs'][-1]['test_accuracy']:.2f}"]
            for folder, record in runs.items()]
    return markdown_table(["run", "seed", "epochs", "finder", "max LR", "the pick of", "last-epoch test accuracy (%)"],
                          rows, left=(0, 5))


@exit_on_user_error
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help="run folders: their sweeps, and their accuracy at their max LR")
    parser.add_argument("--sweeps", nargs="*", default=[], help="run folders whose sweep alone counts")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    runs = {folder: read_run(folder) for folder in args.runs}
    for folder in [folder for folder, record in runs.items() if not record.get("finished")]:
        print(f"left out: {folder} has not finished")
        del runs[folder]
    every = [*runs.values(), *(read_run(folder) for folder in args.sweeps)]
    sweeps = distinct_sweeps(every)
    if not sweeps:
        raise UserError("none of the runs given recorded an LR finder sweep")
    out = writable_folder(Path(args.out))
    picks = {folder: rule_of(record, sweeps) for folder, record in runs.items()}
    accuracy = {name: spread([100 * record["epochs"][-1]["test_accuracy"] for folder, record in runs.items()
                              if picks[folder] == name]) for name in RULES}
    summary = {name: {**rule_spread(sweeps, rule), "last_test_accuracy": accuracy[name]}
               for name, rule in RULES.items()}
    # The sweep's length: steps recorded, and those a sweep from 1e-4 that ends at the valley's far edge takes.
    lengths = {"recorded_steps": statistics.mean(len(sweep["lrs"]) for _, sweep in sweeps),
               "steps_from_1e-4_to_the_edge": statistics.mean(
                   sum(1e-4 <= lr <= valley(sweep)[1] for lr in sweep["lrs"]) for _, sweep in sweeps)}
    device, versions = every[0]["device"], every[0]["versions"]
    lines = [f"{len(sweeps)} distinct sweeps on {device['name']} ({device['type']})", "",
             rules_table(summary),
             f"Sweep length: {lengths['recorded_steps']:.0f} steps recorded on average; from LR 1e-4 to the "
             f"valley's far edge, {lengths['steps_from_1e-4_to_the_edge']:.0f}.", "",
             "Every run whose accuracy counts, with the max LR it trained at:", "", run_table(runs, picks)]
    result = {"rules": summary, "sweep_lengths": lengths, "runs": {
        folder: {"seed": record["config"]["training"]["seed"], "max_lr": record["max_lr"],
                 "rule": picks[folder], "last_test_accuracy": record["epochs"][-1]["test_accuracy"]}
        for folder, record in runs.items()}, "sweeps_only": args.sweeps, "device": device,
              "versions": versions,
              "command": " ".join(["python benchmarks/lr_finder_rules.py", *(sys.argv[1:] if argv is None else argv)])}
    write_json(out / "rules.json", result)
    write_text(out / "rules.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
