"""Run candidates x seeds, each run its own process, and summarize them side by side.

    python benchmarks/sweep.py --out runs/seeds --seeds 5                        # the recipe over 5 seeds
    python benchmarks/sweep.py --out runs/study --configs rn18_configs/{8,12,16,24,32,40}ep.yaml --seeds 2
    python benchmarks/sweep.py --out runs/peers --candidates benchmarks/peers.yaml --seeds 3
    python benchmarks/sweep.py --out runs/seeds --seeds 2 --training.epochs 2    # other flags go to each run

A candidate is a config file (each of --configs) or a named entry of a --candidates file, whose keys
benchmarks/README.md lists. Each (candidate, seed) runs into OUT/runs/<candidate>/seed<s>, seeds in order
across candidates, so a sweep cut short still covers every candidate. Run it again to finish or extend a
sweep: finished runs are kept, one cut off resumes from its checkpoint. Writes NAME.json, NAME.md and
NAME.png, NAME being the candidates file's name, or "sweep".
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from fast_cifar.errors import Interrupted, UserError, exit_on_user_error
from fast_cifar.files import inside, writable_folder, write_json, write_text
from fast_cifar.plots import plt, save_figure
from fast_cifar.report import FIGURES, figures, machine, markdown_table, mean_std, source_name
from fast_cifar.results import finished_run

REPO = Path(__file__).resolve().parents[1]
TRAIN = "fast_cifar/train.py"
CANDIDATE = dict(config=None, script=None, settings=None, why="", seeds=None, needs=None, reference=False)
ACCURACY = "last-epoch test accuracy (%)"


def read_candidates(args):
    """{name: spec} from --candidates, or else each of --configs, checked before any run starts."""
    if not args.candidates:
        raw = {Path(config).stem: {"config": config} for config in args.configs or ["rn18_configs/24ep.yaml"]}
    else:
        try:
            raw = yaml.safe_load(Path(args.candidates).read_text())
        except (OSError, yaml.YAMLError) as error:
            raise UserError(f"cannot read candidates file {args.candidates}: {error}") from None
        if not isinstance(raw, dict) or not raw:
            raise UserError(f"{args.candidates} must map candidate names to {{config: ..., settings: {{...}}}}")
    candidates = {}
    for name, spec in raw.items():
        spec = {**CANDIDATE, **(spec or {})}
        inside(".", str(name), "a candidate's name")  # it names a folder
        if not spec["config"] and not spec["script"]:
            raise UserError(f"candidate '{name}' names neither a config nor a script")
        for key in ("config", "script"):
            spec[key] = spec[key] and repository_path(spec[key], f"candidate '{name}': {key}")
        candidates[str(name)] = {**spec, "settings": dict(spec["settings"] or {})}
    return candidates


def repository_path(path, what):
    """A file as reports name it: relative to the repository where it lies inside it."""
    found = next((p.resolve() for p in (Path(path), REPO / path) if p.is_file()), None)
    if found is None:
        raise UserError(f"{what} file not found: {path}")
    return str(found.relative_to(REPO)) if found.is_relative_to(REPO) else str(found)


def command_for(spec, seed, folder, run_flags):
    settings = [item for key, value in spec["settings"].items() for item in (f"--{key}", str(value))]
    config = ["--config", str(REPO / spec["config"])] if spec["config"] else []
    return [sys.executable, str(REPO / (spec["script"] or TRAIN)), *config, *run_flags, *settings,
            "--training.seed", str(seed), "--output.dir", str(folder.parent), "--output.name", folder.name]


def restart_flags(folder):
    """Resume a run cut off from its checkpoint; start one without a checkpoint afresh."""
    if (folder / "checkpoint.pt").is_file():
        return ["--training.resume", str(folder)]
    return ["--output.overwrite", "true"] if folder.exists() else []


def run_all(pending, jobs, stop_starting_after, env):
    """Run (label, folder, command) triples, `jobs` at a time, none started after `stop_starting_after`
    seconds (0: no limit). Returns {label: its one-line error} for the runs that failed."""
    started, running, failed = time.monotonic(), {}, {}
    try:
        while pending or running:
            for process, (label, log) in [item for item in running.items() if item[0].poll() is not None]:
                del running[process]
                log.close()
                print(f"done: {label} (exit {process.returncode})", flush=True)
                if process.returncode:
                    failed[label] = error_line(log.name)
                    print(f"  {label} failed: {failed[label]}", flush=True)
            if pending and stop_starting_after and time.monotonic() - started > stop_starting_after:
                print(f"{len(pending)} runs not started: past --stop-starting-after", flush=True)
                pending.clear()
            while pending and len(running) < jobs:
                label, folder, command = pending.pop(0)
                folder.parent.mkdir(parents=True, exist_ok=True)
                log = open(folder.parent / f"{folder.name}.log", "a")
                print(f"start: {label}", flush=True)
                running[subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)] = label, log
            time.sleep(0.5)
    finally:
        for process in running:  # stopped early: leave no training process behind
            process.terminate()
        for process, (_, log) in running.items():
            process.wait()
            log.close()
    return failed


def error_line(log_path):
    """The last line a failed run printed: its one-line error."""
    lines = [line.strip() for line in Path(log_path).read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def summarize(candidates, records, commands):
    """{candidate: its spec, model, figures over its runs, and each run's figures}."""
    def model(record):
        described, use = record["model"], record["hardware_use"]
        return {"arch": described["arch"], "parameters_m": f"{described['parameters'] / 1e6:.2f}",
                "gflop_per_image": f"{use['flops_per_image'] / 1e9:.2f}" if use else "",
                "epochs": record["epochs"][-1]["epoch"]}

    return {name: {"runs": len(runs), "figures": figures(runs), "model": model(runs[0]) if runs else None,
                   "per_run": [{"seed": r["config"]["training"]["seed"], **{k: read(r) for k, read in FIGURES.items()}}
                               for r in runs],
                   "command": " ".join(commands[name, 0]) if (name, 0) in commands else None,
                   **{key: spec[key] for key in ("config", "script", "settings", "why", "reference")}}
            for name, spec in candidates.items() for runs in [records.get(name, [])]}


def report(summary, header_line, problems):
    """A row per candidate, its end-to-end time over each reference's; then the runs not finished, and why."""
    references = [name for name, row in summary.items() if row["reference"] and row["runs"]]
    seconds = {name: row["figures"]["end to end (s)"] for name, row in summary.items()}
    rows = []
    for name, row in summary.items():
        found, last = row["figures"], row["figures"][ACCURACY]
        settings = ", ".join(f"{key}={value}" for key, value in row["settings"].items())
        rows.append([name, *(row["model"] or dict.fromkeys(range(4), "")).values(), row["runs"], mean_std(last),
                     f"{last['min']:.2f} – {last['max']:.2f}" if last else "", mean_std(found["with TTA (%)"]),
                     f"{found['max LR']['mean']:.2e}" if found["max LR"] else "",
                     *(mean_std(found[key], 1) for key in ("start-up (s)", "training (s)", "end to end (s)")),
                     mean_std(found["training images/s"], 0),
                     *(f"{seconds[name]['mean'] / seconds[ref]['mean']:.2f}x" if seconds[name] else ""
                       for ref in references),
                     f"`{row['script'] or TRAIN}`" + (f" `{row['config']}`" if row["config"] else "")
                     + (f" with {settings}" if settings else "")])
    header = ["candidate", "model", "params (M)", "GFLOP/image", "epochs", "runs", "last epoch (%)", "min – max",
              "with TTA (%)", "max LR", "start-up (s)", "training (s)", "end to end (s)", "images/s",
              *(f"end to end / {ref}'s" for ref in references), "what it runs"]
    notes = "".join(f"- {label}: {why}\n" for label, why in problems.items())
    return f"{header_line}\n\n{markdown_table(header, rows, left=(0, 1, -1))}" + \
        (f"\nNot run or not finished:\n\n{notes}" if notes else "")


def plot(records, path, peers):
    """Accuracy against training and against end-to-end seconds, a point per run, and each of `peers`'
    candidates (another sweep's summary) as a labelled star at its means."""
    figure, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for axis, seconds in zip(axes, ("training (s)", "end to end (s)")):
        for name, runs in records.items():
            axis.plot([FIGURES[seconds](r) for r in runs], [FIGURES[ACCURACY](r) for r in runs], "o", alpha=0.8,
                      label=name)
        for name, row in peers.items():
            if row["runs"] and row["figures"][seconds]:
                point = row["figures"][seconds]["mean"], row["figures"][ACCURACY]["mean"]
                axis.plot(*point, "k*", markersize=9)
                axis.annotate(name, point, textcoords="offset points", xytext=(4, 4), fontsize="small")
        axis.set(xlabel=f"{seconds[:-4]}, seconds", title=f"Accuracy against {seconds[:-4]} time")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy at the last epoch (%)")
    axes[1].legend(fontsize="x-small", loc="lower right")
    save_figure(figure, path)


def read_peers(path):
    """Another sweep's candidates, less those whose runs were withdrawn (runs/<name>/WITHDRAWN.md says why)."""
    try:
        summary = json.loads(Path(path).read_text())["summary"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"--peers {path}: not a sweep's JSON ({type(error).__name__}: {error})") from None
    return {name: row for name, row in summary.items()
            if not (Path(path).parent / "runs" / name / "WITHDRAWN.md").exists()}


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)  # --config goes to the runs, not to --configs
    parser.add_argument("--out", required=True, help="the sweep's folder")
    parser.add_argument("--configs", nargs="+", default=[], help="config files, each a candidate")
    parser.add_argument("--candidates", help="YAML file of named candidates (config + settings)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 for every candidate")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs side by side, each with cores/jobs CPU threads unless OMP_NUM_THREADS says")
    parser.add_argument("--only", default="", help="comma-separated candidate names (default: all)")
    parser.add_argument("--stop-starting-after", type=float, default=0,
                        help="seconds after which no new run starts (0: no limit)")
    parser.add_argument("--report-only", action="store_true", help="rewrite the report; run nothing")
    parser.add_argument("--peers", help="another sweep's JSON (peers.json): its candidates drawn as stars on the plot")
    parser.add_argument("--fresh-compile-cache", action="store_true",
                        help="torch.compile's caches in OUT/compile_cache, emptied first: with --jobs 1, each "
                             "config's first run starts cold and the next ones find its compiled graphs")
    args, train_flags = parser.parse_known_args(argv)
    if args.seeds < 1 or args.jobs < 1:
        raise UserError(f"--seeds and --jobs must be 1 or more, got {args.seeds} and {args.jobs}")
    if args.candidates and args.configs:
        raise UserError("give --configs or --candidates, not both")
    return args, train_flags


def cuda_available():
    import torch  # here, not above: a sweep that needs no CUDA starts without torch's import, over a second

    return torch.cuda.is_available()


@exit_on_user_error
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args, train_flags = parse(argv)
    peers = read_peers(args.peers) if args.peers else {}  # read before any run: a typo costs no runs
    candidates = read_candidates(args)
    if unknown := set(filter(None, args.only.split(","))) - set(candidates):
        raise UserError(f"--only names unknown candidates: {', '.join(sorted(unknown))}")
    candidates = {name: spec for name, spec in candidates.items() if not args.only or name in args.only.split(",")}
    out = writable_folder(Path(args.out))
    skipped = {} if args.report_only else {  # --report-only runs nothing: a GPU's runs are reported anywhere
        name: "needs a CUDA GPU, and torch sees none" for name, spec in candidates.items()
        if spec["needs"] == "cuda" and not cuda_available()}
    for name, why in skipped.items():
        print(f"skipping {name}: {why}", flush=True)
    folders = {(name, seed): out / "runs" / name / f"seed{seed}" for seed in range(args.seeds)
               for name, spec in candidates.items() if name not in skipped and seed < (spec["seeds"] or args.seeds)}
    commands = {key: command_for(candidates[key[0]], key[1], folder, train_flags) for key, folder in folders.items()}
    pending = [] if args.report_only else [(f"{name} seed {seed}", folder, commands[name, seed] + restart_flags(folder))
                                           for (name, seed), folder in folders.items() if not finished_run(folder)]
    done = sum(bool(finished_run(folder)) for folder in folders.values())
    print(f"{done} of {len(folders)} runs finished earlier; {len(pending)} to run", flush=True)
    env = dict(os.environ)
    if args.jobs > 1 and "OMP_NUM_THREADS" not in env:  # runs side by side share the cores, not oversubscribe them
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.jobs))
    if args.fresh_compile_cache and pending:
        shutil.rmtree(out / "compile_cache", ignore_errors=True)
        env["TORCHINDUCTOR_CACHE_DIR"] = str(out / "compile_cache")
    try:
        failed = run_all(pending, args.jobs, args.stop_starting_after, env)
    except Interrupted as stop:  # run_all has stopped the runs in flight
        raise Interrupted(f"{stop}: the finished runs are kept under {out / 'runs'}; run the same command again to "
                          f"finish the rest (a run cut off resumes from its checkpoint)") from None

    records = {}
    for (name, _), folder in folders.items():
        if record := finished_run(folder):
            records.setdefault(name, []).append(record)
    if not records:
        raise UserError(f"no run finished: see the logs under {out / 'runs'}")
    first = next(iter(records.values()))[0]
    problems = {**{name: f"skipped: {why}" for name, why in skipped.items()},
                **{label: f"failed: {line}" for label, line in failed.items()}}
    summary, data = summarize(candidates, records, commands), source_name(first["data"]["source"])
    stem = Path(args.candidates).stem if args.candidates else "sweep"
    write_json(out / f"{stem}.json", {
        "summary": summary, "not_run": problems, "seeds": args.seeds, "jobs": args.jobs, "run_flags": train_flags,
        "device": first["device"], "versions": first["versions"], "data": data,
        "command": " ".join(["python benchmarks/sweep.py", *argv])})
    table = report(summary, f"{machine(first)}; data: {data}", problems)
    write_text(out / f"{stem}.md", table)
    plot(records, out / f"{stem}.png", peers)
    print(f"{table}\nwrote {out}/{stem}.json, {stem}.md, {stem}.png")
    if failed:
        raise UserError(f"{len(failed)} runs failed ({', '.join(failed)}): see their logs under {out / 'runs'}")


if __name__ == "__main__":
    main()
