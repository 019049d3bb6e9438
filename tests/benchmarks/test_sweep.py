"""benchmarks/sweep.py's bookkeeping, with a stand-in for train.py (stand_in_train.py), and its bad input."""
import importlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fast_cifar.config import check_train_settings, declare_train_sections, parse_config

from helpers import REPO, error_lines, record_of_shape, run_main, wait_until

STAND_IN = REPO / "tests" / "benchmarks" / "stand_in_train.py"
CANDIDATES = f"""
recipe:
  script: {STAND_IN}
label_smoothing_0:
  script: {STAND_IN}
  settings: {{training.label_smoothing: 0.0}}
"""


@pytest.fixture(autouse=True)
def stand_in_template(tmp_path, monkeypatch):
    template = tmp_path / "record_template.json"
    template.write_text(json.dumps(record_of_shape()))
    monkeypatch.setenv("STAND_IN_TEMPLATE", str(template))


@pytest.mark.slow
def test_candidates_over_seeds_then_a_rerun_keeps_them(tmp_path):
    candidates = tmp_path / "candidates.yaml"
    candidates.write_text(CANDIDATES)
    out = tmp_path / "sweep"
    args = ["--candidates", candidates, "--seeds", 2, "--jobs", 2, "--out", out, "--training.epochs", 3]
    result = run_main("benchmarks/sweep.py", *args)
    assert result.returncode == 0, result.stderr[-3000:]

    runs = {name: [json.loads((out / "runs" / name / f"seed{s}" / "results.json").read_text()) for s in (0, 1)]
            for name in ("recipe", "label_smoothing_0")}
    assert [r["config"]["training"]["seed"] for r in runs["recipe"]] == [0, 1]
    assert {r["config"]["training"]["epochs"] for r in runs["recipe"]} == {3}  # flags after the options reach runs
    assert {r["config"]["training"]["label_smoothing"] for r in runs["label_smoothing_0"]} == {0.0}
    # two runs side by side share the cores rather than each taking all of them
    expected = os.environ.get("OMP_NUM_THREADS", str(max(1, os.cpu_count() // 2)))
    assert {r["device"]["omp_num_threads"] for r in runs["recipe"] + runs["label_smoothing_0"]} == {expected}

    summary = json.loads((out / "candidates.json").read_text())["summary"]  # named after the candidates file
    for name, records in runs.items():
        last = [100 * r["epochs"][-1]["test_accuracy"] for r in records]
        figure = summary[name]["figures"]["last-epoch test accuracy (%)"]
        assert figure["mean"] == statistics.fmean(last) and figure["std"] == statistics.stdev(last)
        assert summary[name]["figures"]["training (s)"]["max"] == max(r["timings"]["training"] for r in records)
        assert [run["seed"] for run in summary[name]["per_run"]] == [0, 1]
    row = table_rows(out / "candidates.md")["label_smoothing_0"]
    assert row["runs"] == "2" and "training.label_smoothing=0.0" in row["what it runs"]
    assert row["last epoch (%)"] == f"{statistics.fmean([55.0, 56.0]):.2f} ± {statistics.stdev([55.0, 56.0]):.2f}"
    assert (out / "candidates.png").read_bytes()[:4] == b"\x89PNG"

    # Run again: nothing is run again, and the figures are the same.
    again = run_main("benchmarks/sweep.py", *args)
    assert again.returncode == 0 and "4 of 4 runs finished earlier; 0 to run" in again.stdout
    assert json.loads((out / "candidates.json").read_text())["summary"] == summary


@pytest.mark.slow
def test_ctrl_c_stops_the_sweep_and_its_run_and_a_rerun_finishes_every_seed_once(tmp_path):
    candidates = tmp_path / "candidates.yaml"
    candidates.write_text(CANDIDATES)
    out = tmp_path / "sweep"
    args = ["--candidates", candidates, "--seeds", 2, "--out", out]
    sweep = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "sweep.py"), *map(str, args)], text=True,
                             env={**os.environ, "STAND_IN_SECONDS": "60"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    started = out / "runs" / "recipe" / "seed0" / "pid"
    wait_until(started.exists, 60)
    time.sleep(0.2)  # the pid is written: the run is mid-work
    sweep.send_signal(signal.SIGINT)
    _, stderr = sweep.communicate(timeout=60)
    assert sweep.returncode == 130 and len(error_lines(stderr)) == 1, stderr
    assert error_lines(stderr)[0].startswith(f"stopped by SIGINT: the finished runs are kept under {out / 'runs'}")
    with pytest.raises(ProcessLookupError):  # the run in flight was stopped with it, not left behind
        os.kill(int(started.read_text()), 0)
    assert not (out / "runs" / "recipe" / "seed0" / "results.json").exists()

    again = run_main("benchmarks/sweep.py", *args)
    assert again.returncode == 0 and "0 of 4 runs finished earlier; 4 to run" in again.stdout, again.stderr
    summary = json.loads((out / "candidates.json").read_text())["summary"]
    assert {name: [run["seed"] for run in row["per_run"]] for name, row in summary.items()} == {
        "recipe": [0, 1], "label_smoothing_0": [0, 1]}


@pytest.mark.slow
def test_a_failed_run_is_named_and_the_others_are_reported(tmp_path):
    candidates = tmp_path / "candidates.yaml"
    candidates.write_text(CANDIDATES + f"broken:\n  script: {STAND_IN}\n  settings: {{fail: 'batch too large'}}\n")
    result = run_main("benchmarks/sweep.py", "--candidates", candidates, "--only", "recipe,broken", "--out",
                        tmp_path / "sweep")
    assert result.returncode == 2
    assert error_lines(result.stderr)[-1].startswith("error: 1 runs failed (broken seed 0)")
    assert table_rows(tmp_path / "sweep" / "candidates.md")["recipe"]["runs"] == "1"
    # the failed run's own one-line error is in the report, beside the runs that finished
    why = json.loads((tmp_path / "sweep" / "candidates.json").read_text())["not_run"]["broken seed 0"]
    assert why == "failed: error: batch too large"
    assert f"- broken seed 0: {why}" in (tmp_path / "sweep" / "candidates.md").read_text()


def table_rows(path):
    """The first Markdown table in `path` as {first cell: {column: cell}}."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    return {row[0]: dict(zip(header, row)) for row in rows if len(row) == len(header)}


PEERS = f"""
kit:
  script: {STAND_IN}
  reference: true
by_hand:
  script: {STAND_IN}
  seeds: 1
  reference: true
gpu_only:
  script: benchmarks/airbench_peer.py
  needs: cuda
"""


@pytest.mark.slow
def test_peers_a_seed_cap_a_skip_and_ratios(tmp_path):
    candidates = tmp_path / "peers.yaml"
    candidates.write_text(PEERS)
    out = tmp_path / "peers"
    result = run_main("benchmarks/sweep.py", "--candidates", candidates, "--seeds", 2, "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipping gpu_only: needs a CUDA GPU" in result.stdout  # CI has no GPU
    report = json.loads((out / "peers.json").read_text())
    assert report["not_run"] == {"gpu_only": "skipped: needs a CUDA GPU, and torch sees none"}
    summary = report["summary"]
    assert summary["kit"]["runs"] == 2 and summary["by_hand"]["runs"] == 1 and summary["gpu_only"]["runs"] == 0
    assert summary["kit"]["model"] == {"arch": "resnet18", "parameters_m": "11.00", "gflop_per_image": "1.00",
                                       "epochs": 2}
    assert summary["kit"]["command"].endswith("--training.seed 0 --output.dir " + str(out / "runs" / "kit")
                                              + " --output.name seed0")
    # every row's end-to-end time against each reference's, from the rows' own seconds
    seconds = {name: summary[name]["figures"]["end to end (s)"]["mean"] for name in ("kit", "by_hand")}
    assert seconds == {"kit": 3.0, "by_hand": 2.0}
    rows = table_rows(out / "peers.md")
    for name in seconds:
        for reference in seconds:
            assert rows[name][f"end to end / {reference}'s"] == f"{seconds[name] / seconds[reference]:.2f}x"
    assert rows["gpu_only"]["runs"] == "0"

    # a GPU machine's finished run of gpu_only, reported where no GPU is: --report-only skips nothing
    shutil.copytree(out / "runs" / "kit" / "seed0", out / "runs" / "gpu_only" / "seed0")
    result = run_main("benchmarks/sweep.py", "--candidates", candidates, "--seeds", 2, "--out", out, "--report-only")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "peers.json").read_text())
    assert report["summary"]["gpu_only"]["runs"] == 1 and report["not_run"] == {}


@pytest.mark.slow
def test_bad_candidates_are_one_line(tmp_path):
    candidates = tmp_path / "candidates.yaml"
    for text, message in (("typo:\n  config: rn18_configs/no_such.yaml\n",
                           "candidate 'typo': config file not found: rn18_configs/no_such.yaml"),
                          ("../up:\n  config: rn18_configs/24ep.yaml\n", "a candidate's name must be one plain name")):
        candidates.write_text(text)
        result = run_main("benchmarks/sweep.py", "--candidates", candidates, "--out", tmp_path / "sweep")
        assert result.returncode == 2 and message in error_lines(result.stderr)[0], result.stderr
    assert not (tmp_path / "sweep" / "runs").exists()


def test_committed_study_runs_match_their_candidates():
    # Every committed run of the tuning study recorded the settings its candidate names.
    study = REPO / "benchmarks" / "results" / "tuning_h100"
    candidates = yaml.safe_load((study / "candidates.yaml").read_text())
    checked = 0
    for name, spec in candidates.items():
        for results in sorted((study / "runs" / name).glob("seed*/results.json")):
            recorded = json.loads(results.read_text())["config"]
            for key, value in (spec.get("settings") or {}).items():
                section, setting = key.split(".")
                assert recorded[section][setting] == value, (results, key)
            checked += 1
    assert checked > 0


@pytest.mark.parametrize("candidates", sorted((REPO / "benchmarks").glob("*.yaml")), ids=lambda path: path.name)
def test_every_committed_candidate_is_a_command_its_script_accepts(candidates, tmp_path, monkeypatch):
    """A misspelt setting of any candidate, run or not by scripts/gpu_run.sh's dry runs, fails here, not on
    a lent GPU: each candidate's command, as the sweep builds it, goes through its script's own parser."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    sweep = importlib.import_module("sweep")
    sections = {"fast_cifar/train.py": declare_train_sections, "benchmarks/plain_pytorch.py": declare_train_sections,
                "benchmarks/airbench_peer.py": importlib.import_module("airbench_peer").declare_sections}
    args, _ = sweep.parse(["--out", str(tmp_path), "--candidates", str(candidates)])
    for name, spec in sweep.read_candidates(args).items():
        _, script, *argv = sweep.command_for(spec, 0, tmp_path / name, [])
        check_train_settings(parse_config(sections[str(Path(script).relative_to(REPO))], argv))


def test_the_sweep_starts_without_torch():
    # It runs each candidate in a process of its own: its own start, reports included, needs no torch (over a
    # second of import), unless a candidate needs CUDA.
    code = "import sys; import sweep; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO / "benchmarks").returncode == 0
