"""Replay LR finder rules on recorded sweeps: how far each rule's pick moves between seeds, and where it lands.

    python benchmarks/lr_rules.py --out DIR --group "H200 recipe=benchmarks/results/peers_h200/runs/recipe_*/seed*" \
        --group "cpu_small=runs/sweeps/runs/cpu_small/seed*" --band 3e-3 1.6e-2 \
        --pair runs/rule/runs/cpu_small runs/grid/runs/lr_3e-3

A group is a set of run folders whose sweeps share their settings and differ by seed (identical sweeps count
once). Each recorded sweep is replayed, from its raw losses, through lr_finder.SweepCurve: every rule reads the
curve today's sweep would have recorded (cut at the valley's edge), so the kit's row is exactly what train.py
picks. A group's spread is its highest pick over its
lowest. --band counts the picks inside the LRs that trained well at full scale. --pair puts, seed by seed, the
last-epoch accuracy of runs that trained at the rule's pick beside runs at a fixed LR. Writes DIR/rules.json
and DIR/rules.md.
"""
import argparse
import glob
import math
import statistics
import sys
from pathlib import Path

from fast_cifar.config import declare_train_sections, parse_config
from fast_cifar.errors import UserError, exit_on_user_error
from fast_cifar.files import writable_folder, write_json, write_text
from fast_cifar.lr_finder import SweepCurve
from fast_cifar.report import markdown_table
from fast_cifar.results import finished_run

KIT = parse_config(declare_train_sections, []).lr_finder  # the rule train.py applies


def steepest_descent(lrs, smoothed):
    """The LR where the smoothed loss falls fastest per decade (fastai's `steep`)."""
    slopes = [(smoothed[i + 1] - smoothed[i - 1]) / math.log10(lrs[i + 1] / lrs[i - 1]) for i in range(1, len(lrs) - 1)]
    return lrs[1 + slopes.index(min(slopes))]


def longest_descent_middle(lrs, smoothed):
    """fastai's `valley`, from its description: the longest run of steps along which the loss keeps falling
    (not necessarily adjacent steps), and the LR half way along it."""
    longest = [1] * len(smoothed)  # longest falling sequence ending at each step
    for i in range(len(smoothed)):
        longest[i] += max((longest[j] for j in range(i) if smoothed[j] > smoothed[i]), default=0)
    end = longest.index(max(longest))
    return lrs[end - (longest[end] - 1) // 2]


def kit_rule(anchor_rise):
    return lambda record: replay(record, anchor_rise=anchor_rise).suggested_lr


RULES = {  # name -> the max LR it picks from a recorded run's sweep
    "minimum / 3 (the rule before)": lambda record: replay(record).min_loss_lr / 3,
    "first LR within 5% of the minimum": lambda record: replay(record).valley_start_lr,
    "steepest descent": lambda record: steepest_descent(*curve(replay(record))),
    "fastai's valley": lambda record: longest_descent_middle(*curve(replay(record))),
    **{f"{KIT.multiplier:g} x where the loss comes within {100 * rise:g}% of its minimum"
       + (" (the kit's)" if rise == KIT.anchor_rise else ""): kit_rule(rise) for rise in (0.05, KIT.anchor_rise, 0.1)},
}


def curve(sweep):
    return sweep.lrs, sweep.smoothed_losses


def replay(record, **changes):
    """A recorded sweep as today's sweep would have recorded and read it (the kit's settings with `changes`)."""
    recorded = record["lr_finder"]
    sweep = SweepCurve(argparse.Namespace(**{**vars(KIT), **changes}))
    for lr, loss in zip(recorded["lrs"], recorded["losses"]):
        if sweep.add(lr, loss):
            return sweep.result()
    if recorded.get("stop") == "edge" or recorded.get("stopped_early"):  # the step past its edge is not recorded:
        sweep.add(recorded["edge_lr"], math.inf)  # count it as one that left the valley
    return sweep.result()


def read_group(spec):
    name, _, patterns = spec.partition("=")
    folders = sorted(folder for pattern in patterns.split(",") for folder in glob.glob(pattern))
    records = [record for folder in folders if (record := finished_run(folder)) and record["lr_finder"]]
    if not records:
        raise UserError(f"group '{name}': no run folder with an LR sweep matches {patterns}")
    distinct = {tuple(r["lr_finder"]["losses"]): r for r in records}  # a sweep reused from the cache counts once
    return name, list(distinct.values())


def spread_row(picks, band):
    row = {"picks": picks, "spread": max(picks) / min(picks),
           "geometric_mean": math.exp(statistics.fmean(math.log(p) for p in picks))}
    if band:
        row["in_band"] = sum(band[0] <= p <= band[1] for p in picks)
    return row


def paired(rule_glob, reference_glob):
    """Seed by seed: the rule's runs (finder on) beside runs at a fixed LR (finder off)."""
    def by_seed(pattern):
        return {r["config"]["training"]["seed"]: r for folder in sorted(glob.glob(pattern))
                if (r := finished_run(folder))}
    rule, reference = by_seed(rule_glob + "/seed*"), by_seed(reference_glob + "/seed*")
    rows = []
    for seed in sorted(set(rule) & set(reference)):
        accuracy = [100 * run["epochs"][-1]["test_accuracy"] for run in (rule[seed], reference[seed])]
        rows.append({"seed": seed, "rule_lr": rule[seed]["max_lr"], "rule_accuracy": accuracy[0],
                     "flat": rule[seed]["lr_finder"].get("flat"), "reference_lr": reference[seed]["max_lr"],
                     "reference_accuracy": accuracy[1], "difference": accuracy[0] - accuracy[1]})
    if not rows:
        raise UserError(f"--pair: no seed has a finished run under both {rule_glob} and {reference_glob}")
    return rows


def report(groups, table, pairs, band):
    header = ["rule", *(f"{name} ({len(records)})" for name, records in groups.items())]
    rows = [[rule, *(f"{cell['spread']:.2f}x, {cell['geometric_mean']:.1e}"
                     + (f", {cell['in_band']}/{len(cell['picks'])} in band" if band else "") for cell in cells.values())]
            for rule, cells in table.items()]
    text = ("Spread of each rule's pick (highest / lowest sweep) and its geometric mean, per group (sweeps)"
            + (f"; picks inside {band[0]:g} to {band[1]:g}" if band else "") + "\n\n" + markdown_table(header, rows))
    for name, records in groups.items():
        text += f"\n{name}, sweep by sweep, as the kit reads it:\n\n" + markdown_table(
            ["seed", "valley", "decades", "stopped at", "anchor", "max LR"],
            [[r["config"]["training"]["seed"], f"{s.valley_start_lr:.2e} to {s.edge_lr:.2e}", f"{s.valley_decades:.1f}",
              s.stop + (" (flat)" if s.flat else ""), f"{s.anchor_lr:.2e}", f"{s.suggested_lr:.2e}"]
             for r in records for s in [replay(r)]])
    if pairs:
        differences = [row["difference"] for row in pairs]
        text += "\nSeed by seed, last-epoch test accuracy at the rule's pick and at the fixed LR:\n\n" + markdown_table(
            ["seed", "rule's max LR", "rule (%)", "fixed LR", "fixed (%)", "rule - fixed (points)"],
            [[r["seed"], f"{r['rule_lr']:.2e}", f"{r['rule_accuracy']:.2f}", f"{r['reference_lr']:.2e}",
              f"{r['reference_accuracy']:.2f}", f"{r['difference']:+.2f}"] for r in pairs])
        text += (f"\nMean difference {statistics.fmean(differences):+.2f} points; the largest shortfall "
                 f"{min(differences):+.2f}.\n")
    return text


@exit_on_user_error
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for rules.json and rules.md")
    parser.add_argument("--group", action="append", required=True, help="NAME=GLOB[,GLOB...] of run folders, repeatable")
    parser.add_argument("--band", nargs=2, type=float, help="LOW HIGH: the LRs that trained well at full scale")
    parser.add_argument("--pair", nargs=2, metavar=("RULE_RUNS", "FIXED_RUNS"),
                        help="two folders of seed* runs: at the rule's pick, and at a fixed LR")
    args = parser.parse_args(argv)
    groups = dict(read_group(spec) for spec in args.group)
    table = {rule: {name: spread_row([pick(record) for record in records], args.band)
                    for name, records in groups.items()}
             for rule, pick in RULES.items()}
    pairs = paired(*args.pair) if args.pair else []
    out = writable_folder(Path(args.out))
    write_json(out / "rules.json", {"rules": table, "pairs": pairs, "band": args.band, "kit": vars(KIT),
                                    "command": " ".join(["python benchmarks/lr_rules.py", *(argv or sys.argv[1:])])})
    text = report(groups, table, pairs, args.band)
    write_text(out / "rules.md", text)
    print(f"{text}\nwrote {out}/rules.json and rules.md")


if __name__ == "__main__":
    main()
