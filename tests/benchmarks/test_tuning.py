"""benchmarks/tuning.py: two candidates, two seeds, of a tiny config."""
import json
import statistics

import yaml

from helpers import REPO, error_lines, run_script

TINY = ["--model.width", "4", "--training.batch_size", "64", "--training.test_batch_size", "100",
        "--training.epochs", "2", "--training.compile", "false", "--training.precision", "fp32",
        "--lr_finder.num_iters", "5", "--data.loader", "device"]
CANDIDATES = """
baseline:
  config: rn18_configs/24ep.yaml
label_smoothing_0:
  config: rn18_configs/24ep.yaml
  settings: {training.label_smoothing: 0.0}
"""


def test_candidates_over_seeds_then_report_only(synthetic_folder, tmp_path):
    candidates = tmp_path / "candidates.yaml"
    candidates.write_text(CANDIDATES)
    out = tmp_path / "study"
    args = ["--candidates", candidates, "--seeds", 2, "--out", out, *TINY, "--data.path", synthetic_folder]
    result = run_script("benchmarks/tuning.py", *args)
    assert result.returncode == 0, result.stderr[-3000:]

    runs = {name: [json.loads((out / "runs" / name / f"seed{s}" / "results.json").read_text()) for s in (0, 1)]
            for name in ("baseline", "label_smoothing_0")}
    assert [r["config"]["training"]["seed"] for r in runs["baseline"]] == [0, 1]
    assert {r["config"]["training"]["label_smoothing"] for r in runs["baseline"]} == {0.1}
    assert {r["config"]["training"]["label_smoothing"] for r in runs["label_smoothing_0"]} == {0.0}

    summary = json.loads((out / "tuning.json").read_text())["summary"]
    for name, records in runs.items():
        last = [100 * r["epochs"][-1]["test_accuracy"] for r in records]
        figure = summary[name]["figures"]["test accuracy, last epoch (%)"]
        assert figure["mean"] == statistics.fmean(last) and figure["std"] == statistics.stdev(last)
    table = (out / "tuning.md").read_text()
    assert "| label_smoothing_0 | 2 |" in table and "training.label_smoothing=0.0" in table
    assert (out / "tuning.png").read_bytes()[:4] == b"\x89PNG"

    # The report alone: nothing is trained again, and the figures are the same.
    again = run_script("benchmarks/tuning.py", *args, "--report-only")
    assert again.returncode == 0 and "4 of 4 runs finished earlier; 0 to run" in again.stdout
    assert json.loads((out / "tuning.json").read_text())["summary"] == summary


def test_bad_candidates_file_is_one_line(tmp_path):
    candidates = tmp_path / "candidates.yaml"
    candidates.write_text("typo:\n  config: rn18_configs/no_such.yaml\n")
    result = run_script("benchmarks/tuning.py", "--candidates", candidates, "--out", tmp_path / "study")
    assert result.returncode == 2
    assert error_lines(result.stderr) == ["error: candidate 'typo': config file not found: rn18_configs/no_such.yaml"]
    assert not (tmp_path / "study" / "runs").exists()


def test_committed_study_runs_match_their_candidates():
    # The README's study table names each candidate by tuning_candidates.yaml: every committed run's
    # recorded settings must be its candidate's config with the candidate's changes, and nothing else.
    study = REPO / "benchmarks" / "results" / "tuning_h100"
    candidates = yaml.safe_load((REPO / "benchmarks" / "tuning_candidates.yaml").read_text())
    where_and_how = {("data", "path"), ("data", "loader_threads"), ("output", "dir"), ("output", "name"),
                     ("output", "checkpoint"), ("training", "seed"),
                     ("training", "compile_mode")}  # the study ran before the recipe took CUDA graphs
    checked = 0
    for name, spec in candidates.items():
        expected = yaml.safe_load((REPO / spec["config"]).read_text()) or {}
        for key, value in (spec.get("settings") or {}).items():
            section, setting = key.split(".")
            expected.setdefault(section, {})[setting] = value
        for results in sorted((study / "runs" / name).glob("seed*/results.json")):
            recorded = json.loads(results.read_text())["config"]
            differing = {(section, key) for section, values in expected.items() for key, value in values.items()
                         if (section, key) not in where_and_how and recorded[section][key] != value}
            assert not differing, f"{results}: {differing}"
            checked += 1
    assert checked == 18
