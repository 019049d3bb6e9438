"""benchmarks/lr_rules.py on the committed sweeps: the replay reads what train.py's rule picks."""
import json

from helpers import REPO, error_lines, run_main

RESULTS = REPO / "benchmarks" / "results"


def test_the_replay_gives_the_kits_pick_and_pairs_runs_by_seed(tmp_path):
    rule_runs = RESULTS / "lr_rule" / "rule" / "runs" / "cpu_small"
    result = run_main("benchmarks/lr_rules.py", "--out", tmp_path, "--band", "3e-3", "1.6e-2",
                      "--group", f"cpu_small={rule_runs}/seed?", "--group", f"H200={RESULTS}/peers_h200/runs/recipe_*/seed?",
                      "--pair", rule_runs, RESULTS / "lr_rule" / "grid" / "runs" / "lr_3e-3")
    assert result.returncode == 0, result.stderr
    replay = json.loads((tmp_path / "rules.json").read_text())
    kit = next(cells for rule, cells in replay["rules"].items() if rule.endswith("(the kit's)"))
    # replayed from the raw losses, the rule picks what those runs trained at
    trained = [json.loads((rule_runs / f"seed{seed}" / "results.json").read_text())["max_lr"] for seed in range(5)]
    assert kit["cpu_small"]["picks"] == trained
    assert kit["H200"]["spread"] <= 2 < replay["rules"]["minimum / 3 (the rule before)"]["H200"]["spread"]
    assert [row["seed"] for row in replay["pairs"]] == [0, 1, 2, 3, 4]
    assert all(row["reference_lr"] == 3e-3 and row["rule_lr"] == lr for row, lr in zip(replay["pairs"], trained))
    assert "(the kit's)" in (tmp_path / "rules.md").read_text()


def test_a_group_without_sweeps_is_one_line(tmp_path):
    result = run_main("benchmarks/lr_rules.py", "--out", tmp_path, "--group", f"none={tmp_path}/nothing*")
    assert result.returncode == 2 and len(error_lines(result.stderr)) == 1 and "group 'none'" in result.stderr
