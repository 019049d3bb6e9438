"""benchmarks/sweep.py: candidates over seeds of a tiny config, resumed, reported, and its bad input."""
import json
import statistics

import yaml

from helpers import REPO, error_lines, run_script

TINY = ["--model.width", "4", "--training.batch_size", "64", "--training.test_batch_size", "100",
        "--training.epochs", "2", "--training.compile", "false", "--training.precision", "fp32",
        "--lr_finder.num_iters", "5", "--data.loader", "device"]
CANDIDATES = """
recipe:
  config: rn18_configs/24ep.yaml
label_smoothing_0:
  config: rn18_configs/24ep.yaml
  settings: {training.label_smoothing: 0.0}
"""


def test_candidates_over_seeds_then_a_rerun_keeps_them(synthetic_folder, tmp_path):
    candidates = tmp_path / "candidates.yaml"
    candidates.write_text(CANDIDATES)
    out = tmp_path / "sweep"
    args = ["--candidates", candidates, "--seeds", 2, "--jobs", 2, "--out", out, *TINY, "--data.path", synthetic_folder]
    result = run_script("benchmarks/sweep.py", *args)
    assert result.returncode == 0, result.stderr[-3000:]

    runs = {name: [json.loads((out / "runs" / name / f"seed{s}" / "results.json").read_text()) for s in (0, 1)]
            for name in ("recipe", "label_smoothing_0")}
    assert [r["config"]["training"]["seed"] for r in runs["recipe"]] == [0, 1]
    assert {r["config"]["training"]["label_smoothing"] for r in runs["recipe"]} == {0.1}
    assert {r["config"]["training"]["label_smoothing"] for r in runs["label_smoothing_0"]} == {0.0}

    summary = json.loads((out / "candidates.json").read_text())["summary"]  # named after the candidates file
    for name, records in runs.items():
        last = [100 * r["epochs"][-1]["test_accuracy"] for r in records]
        figure = summary[name]["figures"]["last-epoch test accuracy (%)"]
        assert figure["mean"] == statistics.fmean(last) and figure["std"] == statistics.stdev(last)
        assert summary[name]["figures"]["training (s)"]["max"] == max(r["timings"]["training"] for r in records)
    row = table_rows(out / "candidates.md")["label_smoothing_0"]
    assert row["runs"] == "2" and "training.label_smoothing=0.0" in row["what it runs"]
    assert (out / "candidates.png").read_bytes()[:4] == b"\x89PNG"

    # Run again: nothing is trained again, and the figures are the same.
    again = run_script("benchmarks/sweep.py", *args)
    assert again.returncode == 0 and "4 of 4 runs finished earlier; 0 to run" in again.stdout
    assert json.loads((out / "candidates.json").read_text())["summary"] == summary


def test_configs_are_candidates_named_by_their_file(synthetic_folder, tmp_path):
    result = run_script("benchmarks/sweep.py", "--configs", "rn18_configs/8ep.yaml", "--out", tmp_path, *TINY,
                        "--data.path", synthetic_folder, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "runs" / "8ep" / "seed0" / "results.json").read_text())
    assert record["finished"] and len(record["epochs"]) == 2  # the flags given win over the config's 8 epochs


def test_a_failed_run_is_named_and_the_others_are_reported(synthetic_folder, tmp_path):
    candidates = tmp_path / "candidates.yaml"
    candidates.write_text(CANDIDATES + "broken:\n  config: rn18_configs/24ep.yaml\n"
                                       "  settings: {training.batch_size: 100000}\n")
    result = run_script("benchmarks/sweep.py", "--candidates", candidates, "--only", "recipe,broken", "--out",
                        tmp_path / "sweep", *TINY, "--data.path", synthetic_folder)
    assert result.returncode == 2
    assert error_lines(result.stderr)[-1].startswith("error: 1 runs failed (broken seed 0)")
    assert table_rows(tmp_path / "sweep" / "candidates.md")["recipe"]["runs"] == "1"
    # the failed run's own one-line error is in the report, beside the runs that finished
    why = json.loads((tmp_path / "sweep" / "candidates.json").read_text())["not_run"]["broken seed 0"]
    assert why.startswith("failed: error: ") and "batch" in why
    assert f"- broken seed 0: {why}" in (tmp_path / "sweep" / "candidates.md").read_text()


def table_rows(path):
    """The first Markdown table in `path` as {first cell: {column: cell}}."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    return {row[0]: dict(zip(header, row)) for row in rows if len(row) == len(header)}


PEERS = """
kit:
  config: rn18_configs/24ep.yaml
  reference: true
by_hand:
  script: benchmarks/plain_pytorch.py
  config: rn18_configs/24ep.yaml
  settings: {training.lr: 0.01}
  seeds: 1
  reference: true
gpu_only:
  script: benchmarks/airbench_peer.py
  settings: {airbench.variant: 94}
  needs: cuda
"""


def test_peers_another_script_a_seed_cap_a_skip_and_ratios(synthetic_folder, tmp_path):
    candidates = tmp_path / "peers.yaml"
    candidates.write_text(PEERS)
    out = tmp_path / "peers"
    result = run_script("benchmarks/sweep.py", "--candidates", candidates, "--seeds", 2, "--out", out, *TINY,
                        "--data.path", synthetic_folder)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipping gpu_only: needs a CUDA GPU" in result.stdout  # CI has no GPU
    report = json.loads((out / "peers.json").read_text())
    assert report["not_run"] == {"gpu_only": "skipped: needs a CUDA GPU, and torch sees none"}
    summary = report["summary"]
    assert summary["kit"]["runs"] == 2 and summary["by_hand"]["runs"] == 1 and summary["gpu_only"]["runs"] == 0
    hand = json.loads((out / "runs" / "by_hand" / "seed0" / "results.json").read_text())
    assert hand["loader"].startswith("torchvision DataLoader") and hand["max_lr"] == 0.01  # no finder
    for name in ("kit", "by_hand"):
        assert summary[name]["model"]["arch"] == "resnet18" and summary[name]["model"]["epochs"] == 2
        assert summary[name]["model"]["gflop_per_image"] and summary[name]["command"]
        assert [run["seed"] for run in summary[name]["per_run"]] == list(range(summary[name]["runs"]))
    # every row's end-to-end time against each reference's, from the rows' own seconds
    seconds = {name: summary[name]["figures"]["end to end (s)"]["mean"] for name in ("kit", "by_hand")}
    rows = table_rows(out / "peers.md")
    for name in seconds:
        for reference in seconds:
            assert rows[name][f"end to end / {reference}'s"] == f"{seconds[name] / seconds[reference]:.2f}x"
    assert rows["gpu_only"]["runs"] == "0"


def test_bad_candidates_are_one_line(tmp_path):
    candidates = tmp_path / "candidates.yaml"
    for text, message in (("typo:\n  config: rn18_configs/no_such.yaml\n",
                           "candidate 'typo': config file not found: rn18_configs/no_such.yaml"),
                          ("../up:\n  config: rn18_configs/24ep.yaml\n", "a candidate's name must be one plain name")):
        candidates.write_text(text)
        result = run_script("benchmarks/sweep.py", "--candidates", candidates, "--out", tmp_path / "sweep")
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
    assert checked == 18
