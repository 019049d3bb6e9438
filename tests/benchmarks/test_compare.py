"""benchmarks/compare.py on two small runs made here."""
import json

import pytest

from fast_cifar import train
from fast_cifar.results import STAGES

from helpers import TINY_RUN, error_lines, run_main

pytestmark = pytest.mark.slow  # its fixture trains two runs

TINY = [*TINY_RUN, "--training.epochs", "2", "--data.loader", "device"]


@pytest.fixture(scope="module")
def two_runs(synthetic_folder, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    for name, extra in (("adam", ["--training.optimizer", "adam", "--training.weight_decay", "0.0001"]),
                        ("adamw", ["--training.weight_decay", "0.05"])):
        train.main([*TINY, *extra, "--data.path", str(synthetic_folder), "--output.dir", str(runs),
                    "--output.name", name])
    return runs


def test_compare_writes_table_json_and_plots(two_runs, tmp_path):
    result = run_main("benchmarks/compare.py", two_runs / "adam", two_runs / "adamw", "--out", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    comparison = json.loads((tmp_path / "comparison.json").read_text())
    assert comparison["differing_config"] == {"training.optimizer": ["adam", "adamw"],
                                              "training.weight_decay": [0.0001, 0.05]}
    figures = comparison["figures"]
    adamw = json.loads((two_runs / "adamw" / "results.json").read_text())
    assert figures["last-epoch test accuracy (%)"][1] == 100 * adamw["epochs"][-1]["test_accuracy"]
    first_training = figures[f"{STAGES['training']} (s)"][0]
    assert figures["training time / the first run's"] == [1.0, pytest.approx(adamw["timings"]["training"] / first_training)]
    assert comparison["notes"] == []
    table = (tmp_path / "comparison.md").read_text()
    for row in ("| `training.optimizer` | adam | adamw |", "| last-epoch test accuracy (%) |", "| max LR |",
                "| time to 90%: training / end to end (s) |", "| training time / the first run's | 1.00 |"):
        assert row in table, row
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_other_devices_and_unfinished_runs_are_said(two_runs, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    record = json.loads((two_runs / "adam" / "results.json").read_text())
    record["device"]["name"], record["finished"] = "another CPU", False
    (other / "results.json").write_text(json.dumps(record))
    result = run_main("benchmarks/compare.py", two_runs / "adam", other, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr[-3000:]
    notes = json.loads((tmp_path / "out" / "comparison.json").read_text())["notes"]
    assert any("not like for like" in note for note in notes) and any("Unfinished" in note for note in notes)
    assert "other (unfinished)" in (tmp_path / "out" / "comparison.md").read_text()


def test_a_folder_without_results_is_one_line(two_runs, tmp_path):
    result = run_main("benchmarks/compare.py", two_runs / "adam", tmp_path)
    assert result.returncode == 2
    assert error_lines(result.stderr) == [f"error: {tmp_path} holds no results.json: give run folders made by "
                                          "fast_cifar/train.py"]


def test_a_record_that_is_not_a_runs_is_one_line(two_runs, tmp_path):
    (tmp_path / "results.json").write_text('{"mode": "cpu", "loaders": []}')  # a benchmark's, say
    result = run_main("benchmarks/compare.py", two_runs / "adam", tmp_path)
    assert result.returncode == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and str(tmp_path / "results.json") in lines[0]


def test_a_peers_record_without_losses_is_compared_on_what_it_has(two_runs, tmp_path):
    peer = tmp_path / "peer"  # as airbench_peer.py writes: no losses; plain_pytorch.py's has no test loss
    peer.mkdir()
    record = json.loads((two_runs / "adam" / "results.json").read_text())
    for epoch in record["epochs"]:
        del epoch["train_loss"], epoch["test_loss"]
    record.update(dict.fromkeys(("precision", "loader", "max_lr", "compile_cache", "hardware_use")))  # unknown
    (peer / "results.json").write_text(json.dumps(record))
    result = run_main("benchmarks/compare.py", two_runs / "adamw", peer, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr[-3000:]
    notes = json.loads((tmp_path / "out" / "comparison.json").read_text())["notes"]
    assert "Not recorded, so not plotted: peer (train_loss, test_loss)." in notes
    figures = json.loads((tmp_path / "out" / "comparison.json").read_text())["figures"]
    assert figures["max LR"][1] is None and figures["MFU (% of the bf16 peak)"] == [None, None]  # CPU runs
    assert (tmp_path / "out" / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_ctrl_c_mid_comparison_is_one_line_and_leaves_no_temporary(two_runs, tmp_path):
    result = run_main("benchmarks/compare.py", two_runs / "adam", two_runs / "adamw", "--out", tmp_path,
                      interrupt_in="plot")
    assert result.returncode == 130 and error_lines(result.stderr) == ["stopped by SIGINT"]
    assert {path.name for path in tmp_path.iterdir()} == {"comparison.json", "comparison.md"}  # what it finished
