"""Run candidates x seeds, each run its own process, and summarize them side by side.

    python benchmarks/sweep.py --out runs/seeds --seeds 5                        # the recipe over 5 seeds
    python benchmarks/sweep.py --out runs/study --configs rn18_configs/{8,12,16,24,32,40}ep.yaml --seeds 2
    python benchmarks/sweep.py --out runs/peers --candidates benchmarks/peers.yaml --seeds 3
    python benchmarks/sweep.py --out runs/seeds --seeds 2 --training.epochs 2    # other flags go to each run

A candidate is a config file and the settings it changes: each of --configs is one, or --candidates
names them in a YAML file: name: {config, settings, why; optionally script (a program taking train.py's
flags), seeds (at most this many), needs: cuda (skipped elsewhere, with the reason), reference: true
(every row's time is also given as a ratio to its)}. Flags after the options go to every run before its
candidate's settings. Each (candidate, seed) runs into OUT/runs/<candidate>/seed<s>, up to --jobs at a
time (side by side their timings are not clean: compare accuracy then), seeds in order across candidates,
so a sweep cut short still covers each candidate. A failed run is reported with its error line and does
not stop the others. Run it again to finish or extend a sweep: finished runs are kept, one cut off
resumes from its checkpoint. Writes NAME.json, NAME.md (per candidate: model, size, FLOPs, last-epoch
accuracy as mean ± std and range, with TTA, max LR, start-up, training and end-to-end seconds, images/s;
then each run's start-up by stage) and NAME.png (accuracy against training and against end-to-end seconds,
a point per run, and with --peers another sweep's candidates as stars on the same axes),
NAME being the candidates file's name, or "sweep".
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from fast_cifar.errors import UserError, exit_on_user_error
from fast_cifar.files import inside, writable_folder, write_json, write_text
from fast_cifar.plots import plt, save_figure
from fast_cifar.report import FIGURES, figures, finished_run, machine, markdown_table, mean_std, source_name
from fast_cifar.results import STARTUP_STAGES

REPO = Path(__file__).resolve().parents[1]
TRAIN = "fast_cifar/train.py"


def read_candidates(path):
    """{name: spec} from a candidates file, checked before any run starts."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise UserError(f"cannot read candidates file {path}: {error}") from None
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{path} must map candidate names to {{config: ..., settings: {{...}}}}")
    for name, spec in raw.items():
        inside(".", str(name), "a candidate's name")  # it names a folder
        for key in ("config", "script"):
            if (spec or {}).get(key) and not (REPO / spec[key]).is_file():
                raise UserError(f"candidate '{name}': {key} file not found: {spec[key]}")
        if not (spec or {}).get("config") and not (spec or {}).get("script"):
            raise UserError(f"candidate '{name}' names neither a config nor a script")
    return {str(name): candidate_from(spec or {}) for name, spec in raw.items()}


def candidate_from(spec):
    """Every key a candidate has, with its default where the spec leaves it out."""
    return {"config": None, "script": None, "why": "", "seeds": None, "needs": None, "reference": False,
            **spec, "settings": dict(spec.get("settings") or {})}


def configs_as_candidates(configs):
    """Each config file a candidate, named by its file; paths as reports show them, relative to the repository."""
    candidates = {}
    for config in configs:
        path = Path(config).resolve() if Path(config).is_file() else REPO / config
        if not path.is_file():
            raise UserError(f"config file not found: {config}")
        config = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)
        candidates[path.stem] = candidate_from({"config": config})
    return candidates


def command_for(candidate, seed, folder, run_flags):
    """One run's command."""
    settings = [item for key, value in candidate["settings"].items() for item in (f"--{key}", str(value))]
    config = ["--config", str(REPO / candidate["config"])] if candidate["config"] else []
    return [sys.executable, str(REPO / (candidate["script"] or TRAIN)), *config, *run_flags, *settings,
            "--training.seed", str(seed), "--output.dir", str(folder.parent), "--output.name", folder.name]


def restart_flags(folder):
    """Resume a run cut off from its checkpoint; start one without a checkpoint afresh."""
    if (folder / "checkpoint.pt").is_file():
        return ["--training.resume", str(folder)]
    return ["--output.overwrite", "true"] if folder.exists() else []


def skip_reason(candidate):
    """Why this machine cannot run the candidate, or None."""
    if candidate["needs"] == "cuda" and not torch.cuda.is_available():
        return "needs a CUDA GPU, and torch sees none"
    return None


def error_line(log_path):
    """The last line a failed run printed: its one-line error."""
    try:
        lines = [line for line in Path(log_path).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1].strip() if lines else "no output"


def run_all(pending, jobs, stop_starting_after, env=None):
    """Run (label, folder, command) triples, `jobs` at a time, none started after the deadline.
    Returns {label: error line} for the runs that failed."""
    started, running, failed = time.monotonic(), [], {}
    try:
        while pending or running:
            for item in [item for item in running if item[0].poll() is not None]:
                process, label, log = item
                running.remove(item)
                log.close()
                print(f"done: {label} (exit {process.returncode})", flush=True)
                if process.returncode != 0:
                    failed[label] = error_line(log.name)
                    print(f"  {label} failed: {failed[label]}", flush=True)
            late = stop_starting_after and time.monotonic() - started > stop_starting_after
            while pending and len(running) < jobs and not late:
                label, folder, command = pending.pop(0)
                folder.parent.mkdir(parents=True, exist_ok=True)
                log = open(folder.parent / f"{folder.name}.log", "a")
                print(f"start: {label}", flush=True)
                running.append((subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), label, log))
            if late and pending:
                print(f"{len(pending)} runs not started: past --stop-starting-after", flush=True)
                pending.clear()
            time.sleep(0.5)
    finally:
        for process, _, _ in running:  # stopped early: leave no training process behind
            process.terminate()
        for process, _, log in running:
            process.wait()
            log.close()
    return failed


def describe_model(record):
    """Model, parameters (M), GFLOP per training image and epochs, from one run's record."""
    model, flops = record.get("model", {}), (record.get("hardware_use") or {}).get("flops_per_image")
    return {"arch": model.get("arch", "resnet18"),
            "parameters_m": f"{model['parameters'] / 1e6:.2f}" if "parameters" in model else "",
            "gflop_per_image": f"{flops / 1e9:.2f}" if flops else "", "epochs": record["epochs"][-1]["epoch"]}


def summarize(candidates, records, commands):
    """{candidate: its settings, model, figures over its runs, and each run's figures}."""
    return {name: {"runs": len(records.get(name, [])), "figures": figures(records.get(name, [])),
                   "model": describe_model(records[name][0]) if records.get(name) else None,
                   "per_run": [{"seed": r["config"]["training"]["seed"], **{k: read(r) for k, read in FIGURES.items()}}
                               for r in records.get(name, [])],
                   "command": " ".join(commands[name, 0]) if (name, 0) in commands else None,
                   **{key: spec[key] for key in ("config", "script", "settings", "why", "reference")}}
            for name, spec in candidates.items()}


def report(summary, header_line, problems):
    """The sweep's table: one row per candidate; then the runs that did not finish, and why."""
    references = [name for name, row in summary.items() if row["reference"] and row["runs"]]
    seconds = {name: row["figures"]["end to end (s)"] for name, row in summary.items()}
    rows = []
    for name, row in summary.items():
        found, last = row["figures"], row["figures"]["last-epoch test accuracy (%)"]
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
    return header_line + "\n\n" + markdown_table(header, rows, left=(0, 1, -1)) + \
        (f"\nNot run or not finished:\n\n{notes}" if notes else "")


def startup_table(records):
    """Each run's start-up, stage by stage, in the order the runs ran: with --fresh-compile-cache a config's
    first run is cold and the next ones warm."""
    columns, rows = ("interpreter_and_imports", *STARTUP_STAGES, "total"), []
    for name, runs in records.items():
        for record in runs:
            startup, cache = record["timings"].get("startup", {}), record.get("compile_cache", {})
            rows.append([name, record["config"]["training"]["seed"],
                         *(f"{startup[key]:.1f}" if startup.get(key) is not None else "" for key in columns),
                         f"{cache['inductor_hits']} / {cache['inductor_misses']}" if cache else ""])
    return markdown_table(["candidate", "seed", *columns, "compiled graphs from cache / built"], rows)


def plot(records, path, peers=None):
    """Last-epoch accuracy against training seconds and against end-to-end seconds, a point per run; and
    each candidate of `peers` (another sweep's summary: peers.json) as a labelled star at its means."""
    accuracy = "last-epoch test accuracy (%)"
    figure, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for axis, seconds in zip(axes, ("training (s)", "end to end (s)")):
        for name, runs in records.items():
            axis.plot([FIGURES[seconds](r) for r in runs], [FIGURES[accuracy](r) for r in runs], "o", alpha=0.8,
                      label=name)
        for name, row in (peers or {}).items():
            if row["runs"] and row["figures"][seconds]:
                point = row["figures"][seconds]["mean"], row["figures"][accuracy]["mean"]
                axis.plot(*point, "k*", markersize=9)
                axis.annotate(name, point, textcoords="offset points", xytext=(4, 4), fontsize="small")
        axis.set(xlabel=f"{seconds.removesuffix(' (s)')}, seconds", title=f"Accuracy against {seconds[:-4]} time")
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


@exit_on_user_error
def main(argv=None):
    args, train_flags = parse(sys.argv[1:] if argv is None else argv)
    peers = read_peers(args.peers) if args.peers else None  # read before any run: a typo costs no runs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the runs in flight
    candidates = read_candidates(args.candidates) if args.candidates else \
        configs_as_candidates(args.configs or ["rn18_configs/24ep.yaml"])
    if args.only:
        unknown = set(args.only.split(",")) - set(candidates)
        if unknown:
            raise UserError(f"--only names unknown candidates: {', '.join(sorted(unknown))}")
        candidates = {name: spec for name, spec in candidates.items() if name in args.only.split(",")}
    out = writable_folder(Path(args.out))
    # --report-only runs nothing, so it skips nothing: runs a GPU made are reported on any machine
    skipped = {} if args.report_only else {name: why for name, spec in candidates.items() if (why := skip_reason(spec))}
    for name, why in skipped.items():
        print(f"skipping {name}: {why}", flush=True)
    folders = {(name, seed): out / "runs" / name / f"seed{seed}" for seed in range(args.seeds)
               for name, spec in candidates.items() if name not in skipped and seed < (spec["seeds"] or args.seeds)}
    commands = {key: command_for(candidates[key[0]], key[1], folder, train_flags) for key, folder in folders.items()}
    pending = [(f"{name} seed {seed}", folder, commands[name, seed] + restart_flags(folder))
               for (name, seed), folder in folders.items() if not finished_run(folder)]
    print(f"{len(folders) - len(pending)} of {len(folders)} runs finished earlier; "
          f"{0 if args.report_only else len(pending)} to run", flush=True)
    env = dict(os.environ)
    if args.jobs > 1 and "OMP_NUM_THREADS" not in env:  # runs side by side share the cores, not oversubscribe them
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.jobs))
    if args.fresh_compile_cache and not args.report_only:
        shutil.rmtree(out / "compile_cache", ignore_errors=True)
        env["TORCHINDUCTOR_CACHE_DIR"] = str(out / "compile_cache")
    failed = {} if args.report_only else run_all(pending, args.jobs, args.stop_starting_after, env)

    records = {}
    for (name, _), folder in folders.items():
        if record := finished_run(folder):
            records.setdefault(name, []).append(record)
    if not records:
        raise UserError(f"no run finished: see the logs under {out / 'runs'}")
    first = next(iter(records.values()))[0]
    problems = {**{name: f"skipped: {why}" for name, why in skipped.items()},
                **{label: f"failed: {line}" for label, line in failed.items()}}
    summary, data = summarize(candidates, records, commands), source_name(first.get("data", {}).get("source"))
    stem = Path(args.candidates).stem if args.candidates else "sweep"
    write_json(out / f"{stem}.json", {
        "summary": summary, "not_run": problems, "seeds": args.seeds, "jobs": args.jobs, "run_flags": train_flags,
        "device": first["device"], "versions": first["versions"], "data": data,
        "command": " ".join(["python benchmarks/sweep.py", *(sys.argv[1:] if argv is None else argv)])})
    table = report(summary, f"{machine(first)}; data: {data}", problems)
    write_text(out / f"{stem}.md", f"{table}\nStart-up, process start to the first training step (s):\n\n"
                                   f"{startup_table(records)}")
    plot(records, out / f"{stem}.png", peers)
    print(f"{table}\nwrote {out}/{stem}.json, {stem}.md, {stem}.png")
    if failed:
        raise UserError(f"{len(failed)} runs failed ({', '.join(failed)}): see their logs under {out / 'runs'}")


if __name__ == "__main__":
    main()
