"""benchmarks/seeds.py with two seeds of a tiny config."""
import json
import statistics

from helpers import REPO, run_script

TINY = ["--model.width", "4", "--training.batch_size", "64", "--training.test_batch_size", "100",
        "--training.epochs", "2", "--training.compile", "false", "--training.precision", "fp32",
        "--lr_finder.num_iters", "5", "--data.loader", "device"]


def test_two_seeds_aggregate_and_resume(synthetic_folder, tmp_path):
    args = ["--config", REPO / "rn18_configs" / "24ep.yaml", "--seeds", 2, "--out", tmp_path, *TINY,
            "--data.path", synthetic_folder]
    result = run_script("benchmarks/seeds.py", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads((tmp_path / "runs" / f"seed{s}" / "results.json").read_text()) for s in (0, 1)]
    assert [r["config"]["training"]["seed"] for r in records] == [0, 1]
    summary = json.loads((tmp_path / "seeds.json").read_text())["summary"]
    last = [100 * r["epochs"][-1]["test_accuracy"] for r in records]
    assert summary["test accuracy, last epoch (%)"]["mean"] == statistics.fmean(last)
    assert summary["test accuracy, last epoch (%)"]["std"] == statistics.stdev(last)
    assert summary["training (s)"]["max"] == max(r["timings"]["training"] for r in records)
    assert "| test accuracy, last epoch (%) |" in (tmp_path / "seeds.md").read_text()
    assert (tmp_path / "seeds.png").read_bytes()[:4] == b"\x89PNG"

    # Run again after "an interruption": finished seeds are kept, not retrained.
    again = run_script("benchmarks/seeds.py", *args)
    assert again.returncode == 0 and again.stdout.count("finished earlier, kept") == 2
