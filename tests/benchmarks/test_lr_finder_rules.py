"""benchmarks/lr_finder_rules.py on hand-made records: which sweeps count, which runs count for which rule."""
import json

from helpers import run_main


def sweep(minimum_lr):
    """A recorded sweep whose smoothed loss falls to its minimum at `minimum_lr` (a grid point), then rises."""
    lrs = [1e-4 * 10 ** (i / 10) for i in range(31)]  # 1e-4 to 1e-1
    lowest = min(range(len(lrs)), key=lambda i: abs(lrs[i] - minimum_lr))
    smoothed = [2.0 + 0.01 * (i - lowest) ** 2 for i in range(len(lrs))]
    start = next(lr for lr, loss in zip(lrs, smoothed) if loss <= 1.05 * smoothed[lowest])
    return {"lrs": lrs, "losses": smoothed, "smoothed_losses": smoothed, "min_loss_lr": lrs[lowest],
            "valley_start_lr": start, "edge_lr": lrs[-1], "suggested_lr": lrs[lowest] / 3, "stopped_early": True}


def write_run(folder, seed, epochs, max_lr, finder=None, accuracy=0.5, finished=True):
    config = {"training": {"seed": seed, "epochs": epochs, "lr": max_lr, "weight_decay": 0.2},
              "lr_finder": {"enabled": finder is not None}, "output": {"name": folder.name}, "data": {"path": "x"}}
    record = {"finished": finished, "config": config, "device": {"name": "test machine", "type": "cpu"},
              "versions": {}, "max_lr": max_lr, "lr_finder": finder, "epochs": [{"test_accuracy": accuracy}] * epochs}
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(record))
    return folder


def test_rules_count_each_sweep_once_and_each_run_for_the_rule_it_trained_at(tmp_path):
    seed0, seed1 = sweep(1e-2), sweep(2e-2)
    sweeps_only = [write_run(tmp_path / "sweep0", 0, 1, seed0["suggested_lr"], seed0, accuracy=0.1),
                   write_run(tmp_path / "sweep1", 1, 1, seed1["suggested_lr"], seed1, accuracy=0.1)]
    runs = [write_run(tmp_path / "again0", 0, 4, seed0["suggested_lr"], seed0, accuracy=0.40),  # the same sweep again
            write_run(tmp_path / "minimum1", 1, 4, seed1["suggested_lr"], accuracy=0.50),  # finder off, at its pick
            write_run(tmp_path / "start1", 1, 4, seed1["valley_start_lr"] * 5, accuracy=0.44),
            write_run(tmp_path / "other1", 1, 4, 1e-3, accuracy=0.30),  # no rule's pick
            write_run(tmp_path / "running1", 1, 4, seed1["suggested_lr"], accuracy=0.1, finished=False)]
    result = run_main("benchmarks/lr_finder_rules.py", *runs, "--sweeps", *sweeps_only, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr[-3000:]
    rules = json.loads((tmp_path / "out" / "rules.json").read_text())
    minimum = rules["rules"]["minimum / 3"]
    assert minimum["sweeps"] == 2  # again0 repeats sweep0's sweep
    assert abs(minimum["highest_to_lowest_seed"] - 2.0) < 0.3  # 1e-2 against 2e-2, to the grid's step
    assert minimum["last_test_accuracy"]["n"] == 2 and abs(minimum["last_test_accuracy"]["mean"] - 45.0) < 1e-9
    assert rules["rules"]["valley start x 5"]["last_test_accuracy"]["mean"] == 44.0
    assert {folder.split("/")[-1]: run["rule"] for folder, run in rules["runs"].items()} == {
        "again0": "minimum / 3", "minimum1": "minimum / 3", "start1": "valley start x 5", "other1": None}
    assert "| minimum / 3 |" in (tmp_path / "out" / "rules.md").read_text()
    assert "left out: " in result.stdout and "running1 has not finished" in result.stdout
