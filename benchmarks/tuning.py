"""Tune the recipe by measurement: candidate changes, each over several seeds, side by side.

    python benchmarks/tuning.py --candidates benchmarks/tuning_candidates.yaml --seeds 2 --jobs 3 \
        --out benchmarks/results/tuning [--stop-starting-after 480] [train.py flags for every run]

The candidates file maps a name to the config it starts from and the settings it
changes (see benchmarks/tuning_candidates.yaml). Each (candidate, seed) pair runs
as its own `train.py` process into OUT/runs/<candidate>/seed<s>, up to --jobs at a
time: on one GPU, runs side by side overlap their compilation and data loading, so
a study takes less wall-clock, but their timings are not clean. Compare accuracy
here; time a chosen config alone. Seeds go in order across candidates (every
candidate's seed 0 first), so a study cut short still covers every candidate.

Run it again to extend or finish a study: finished runs are kept, runs cut off are
started again; --report-only rewrites the report from the runs finished so far. Writes tuning.json, tuning.md (per candidate: mean, standard
deviation, min and max of the last-epoch test accuracy, and more) and tuning.png
(every seed's last-epoch accuracy per candidate).
"""
import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from seeds import aggregate  # benchmarks/seeds.py, beside this script
from fast_cifar.errors import UserError, exit_on_user_error
from fast_cifar.files import writable_folder, write_json, write_text
from fast_cifar.plots import plt, save_figure

REPO = Path(__file__).resolve().parents[1]
HEADLINE = "test accuracy, last epoch (%)"


def read_candidates(path):
    """{name: {"config": path, "settings": {"section.key": value}}}, checked before any run starts."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise UserError(f"cannot read candidates file {path}: {error}") from None
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{path} must map candidate names to {{config: ..., settings: {{...}}}}")
    candidates = {}
    for name, spec in raw.items():
        spec = spec or {}
        config = spec.get("config")
        if not config or not (REPO / config).is_file():
            raise UserError(f"candidate '{name}': config file not found: {config}")
        candidates[str(name)] = {"config": config, "settings": dict(spec.get("settings") or {}),
                                 "why": spec.get("why", "")}
    return candidates


def finished_record(folder):
    path = folder / "results.json"
    if path.is_file():
        record = json.loads(path.read_text())
        if record.get("finished"):
            return record
    return None


def command_for(candidate, seed, folder, overrides):
    flags = [item for key, value in candidate["settings"].items() for item in (f"--{key}", str(value))]
    return [sys.executable, str(REPO / "fast_cifar" / "train.py"), "--config", str(REPO / candidate["config"]),
            *flags, *overrides, "--training.seed", str(seed),
            "--output.dir", str(folder.parent), "--output.name", folder.name, "--output.checkpoint", "false"]


def run_all(pending, jobs, stop_starting_after):
    """Run (folder, command) pairs, `jobs` at a time; start none after the deadline. Returns the failures."""
    started, running, failed = time.monotonic(), [], []
    try:
        while pending or running:
            for process, folder, log in [item for item in running if item[0].poll() is not None]:
                running.remove((process, folder, log))
                log.close()
                print(f"done: {folder.relative_to(folder.parents[2])} (exit {process.returncode})", flush=True)
                if process.returncode != 0:
                    failed.append(folder)
            late = stop_starting_after and time.monotonic() - started > stop_starting_after
            while pending and len(running) < jobs and not late:
                folder, command = pending.pop(0)
                if folder.exists():
                    shutil.rmtree(folder)  # a run cut off earlier: it starts again
                folder.parent.mkdir(parents=True, exist_ok=True)
                log = open(folder.parent / f"{folder.name}.log", "w")
                print(f"start: {folder.relative_to(folder.parents[2])}", flush=True)
                running.append((subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), folder, log))
            if late and pending:
                print(f"{len(pending)} runs not started: past --stop-starting-after", flush=True)
                pending.clear()
            time.sleep(1)
    finally:
        for process, _, _ in running:  # stopped early: leave no training process behind
            process.terminate()
        for process, _, log in running:
            process.wait()
            log.close()
    return failed


def summarize(candidates, records):
    summary = {}
    for name in candidates:
        runs = records.get(name, [])
        summary[name] = {"runs": len(runs), "figures": aggregate(runs),
                         "last_epoch_accuracies": [100 * r["epochs"][-1]["test_accuracy"] for r in runs]}
    return summary


def table(candidates, summary):
    first = next(iter(summary.values()))["figures"].get(HEADLINE)
    lines = ["| candidate | seeds | last epoch (%) mean ± std | min – max | Δ vs first | flip TTA (%) | max LR |"
             " what changes |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, entry in summary.items():
        figures = entry["figures"]
        last, tta, lr = figures.get(HEADLINE), figures.get("with flip TTA, last epoch (%)"), figures.get("max LR")
        if not last:
            lines.append(f"| {name} | 0 | | | | | | {describe(candidates[name])} |")
            continue
        delta = f"{last['mean'] - first['mean']:+.2f}" if first else ""
        tta = f"{tta['mean']:.2f}" if tta else ""  # runs without eval_flip_tta
        lines.append(f"| {name} | {last['n']} | {last['mean']:.2f} ± {last['std']:.2f} | {last['min']:.2f} – "
                     f"{last['max']:.2f} | {delta} | {tta} | {lr['mean']:.2e} | {describe(candidates[name])} |")
    return "\n".join(lines) + "\n"


def describe(candidate):
    settings = ", ".join(f"{key}={value}" for key, value in candidate["settings"].items())
    return f"`{candidate['config']}`" + (f" with {settings}" if settings else "")


def plot(summary, path):
    figure, axis = plt.subplots(figsize=(7, 0.45 * len(summary) + 1.5))
    names = list(summary)
    for row, name in enumerate(names):
        values = summary[name]["last_epoch_accuracies"]
        axis.plot(values, [row] * len(values), "o", color="tab:blue", alpha=0.7)
        if values:
            axis.plot([sum(values) / len(values)], [row], "|", color="black", markersize=14)
    axis.set_yticks(range(len(names)), names)
    axis.invert_yaxis()
    axis.set(xlabel="test accuracy at the last epoch (%)", title="Candidates: each dot a seed, bar the mean")
    axis.grid(alpha=0.3, axis="x")
    save_figure(figure, path)


@exit_on_user_error
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", default=str(REPO / "benchmarks" / "tuning_candidates.yaml"))
    parser.add_argument("--seeds", type=int, default=2, help="seeds 0..N-1 for every candidate")
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side")
    parser.add_argument("--only", default="", help="comma-separated candidate names (default: all)")
    parser.add_argument("--stop-starting-after", type=float, default=0,
                        help="seconds after which no new run starts (0: no limit)")
    parser.add_argument("--report-only", action="store_true", help="write the report from the finished runs; run none")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "tuning"))
    args, overrides = parser.parse_known_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the runs in flight
    if args.seeds < 1 or args.jobs < 1:
        raise UserError(f"--seeds and --jobs must be 1 or more, got {args.seeds} and {args.jobs}")
    candidates = read_candidates(args.candidates)
    if args.only:
        unknown = set(args.only.split(",")) - set(candidates)
        if unknown:
            raise UserError(f"--only names unknown candidates: {', '.join(sorted(unknown))}")
        candidates = {name: spec for name, spec in candidates.items() if name in args.only.split(",")}
    out = writable_folder(Path(args.out))
    pairs = [(name, seed) for seed in range(args.seeds) for name in candidates]
    pending = [(out / "runs" / name / f"seed{seed}",
                command_for(candidates[name], seed, out / "runs" / name / f"seed{seed}", overrides))
               for name, seed in pairs if not finished_record(out / "runs" / name / f"seed{seed}")]
    print(f"{len(pairs) - len(pending)} of {len(pairs)} runs finished earlier; "
          f"{0 if args.report_only else len(pending)} to run", flush=True)
    failed = [] if args.report_only else run_all(pending, args.jobs, args.stop_starting_after)

    records = {}
    for name, seed in pairs:
        record = finished_record(out / "runs" / name / f"seed{seed}")
        if record:
            records.setdefault(name, []).append(record)
    if not records:
        raise UserError("no run finished: see the logs under " + str(out / "runs"))
    summary = summarize(candidates, records)
    any_record = next(iter(records.values()))[0]
    write_json(out / "tuning.json", {"candidates": candidates, "seeds": args.seeds, "jobs": args.jobs,
                                     "overrides": overrides, "summary": summary,
                                     "device": any_record["device"], "versions": any_record["versions"],
                                     "command": " ".join(["python benchmarks/tuning.py", *(argv or sys.argv[1:])])})
    write_text(out / "tuning.md", table(candidates, summary))
    plot(summary, out / "tuning.png")
    print(table(candidates, summary))
    print(f"wrote {out}/tuning.json, tuning.md, tuning.png")
    if failed:
        raise UserError(f"{len(failed)} runs failed: see {', '.join(str(f) + '.log' for f in failed)}")


if __name__ == "__main__":
    main()
