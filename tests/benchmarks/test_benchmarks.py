"""The benchmark commands at a tiny size, so they cannot rot (they measure nothing here)."""
import json
import signal

import pytest

from helpers import run_script

pytestmark = pytest.mark.slow  # benchmarks/run.py compiles its rows


def test_run_writes_every_row_table_and_plots(synthetic_folder, tmp_path):
    def run():
        return run_script("benchmarks/run.py", "--bench.mode", "cpu", "--bench.data", synthetic_folder,
                          "--bench.out", tmp_path, "--bench.width", 4, "--bench.batch_size", 16,
                          "--bench.loader_batch_size", 64, "--bench.loader_images", 640,
                          "--bench.warmup_steps", 1, "--bench.timed_steps", 1, "--bench.workers", 2)
    result = run()
    if result.returncode == -signal.SIGABRT:
        # Seen once in five runs on a 2-core CPU, while compiling a row: "terminate called without an active
        # exception" from native code, cause not yet found. A second abort fails the test.
        result = run()
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    loaders = [row["loader"] for row in results["loaders"]]
    assert {"ffcv", "device"} <= set(loaders) and len(set(loaders)) == len(loaders)
    assert results["training"][0]["speedup"] == 1.0
    assert all(row["images_per_second"] > 0 for row in results["loaders"] + results["training"])
    table = (tmp_path / "table.md").read_text()
    assert all(f"| {row['name']} |" in table for row in results["training"])  # every row in the table
    for plot in ("loaders.png", "training.png"):
        assert (tmp_path / plot).read_bytes()[:4] == b"\x89PNG"



def test_import_time_writes_each_modules_seconds(tmp_path):
    result = run_script("benchmarks/import_time.py", "--out", tmp_path, "--runs", 1)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "imports.json").read_text())
    assert set(record["median_seconds"]) == {"torch", "ffcv", "fast_cifar.data", "fast_cifar.train"}
    assert all(seconds > 0 for seconds in record["median_seconds"].values())
