import json
import os
import signal

import pytest

from helpers import error_lines, run_main


def test_help_documents_every_option():
    result = run_main("scripts/write_datasets.py", "--help")
    assert result.returncode == 0
    for option in ("--data.source", "--data.path", "--data.cache_dir", "--data.writer_processes"):
        assert option in result.stdout


@pytest.mark.slow
def test_writes_a_real_subset_of_the_offline_copy(real_subset_archive, tmp_path):
    result = run_main("scripts/write_datasets.py", "--data.source", real_subset_archive, "--data.path", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "train: 1000, test: 200" in result.stdout
    info = json.loads((tmp_path / "dataset.json").read_text())
    assert info["classes"][0] == "airplane" and "image folder" in info["source"]
    assert {p.name for p in tmp_path.iterdir()} == {"train.beton", "test.beton", "dataset.json"}


def test_synthetic_source_sizes(tmp_path):
    result = run_main("scripts/write_datasets.py", "--data.source", "synthetic", "--data.path", tmp_path,
                        "--data.synthetic_train", 100, "--data.synthetic_test", 30)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "dataset.json").read_text())["splits"]["test"]["records"] == 30


def test_bad_source_is_one_line(tmp_path):
    result = run_main("scripts/write_datasets.py", "--data.source", tmp_path / "missing", "--data.path", tmp_path / "out")
    assert result.returncode == 2
    assert error_lines(result.stderr) == [f"error: data source not found: {tmp_path / 'missing'} "
                                          "(give 'download', 'synthetic' or a path to CIFAR-10)"]
    assert not (tmp_path / "out").exists()


def test_a_signal_while_writing_leaves_nothing_behind(tmp_path, monkeypatch):
    # SIGTERM once the train split's temporary .beton is written, before anything is renamed into place.
    from fast_cifar import beton

    def check_then_signal(*args):
        os.kill(os.getpid(), signal.SIGTERM)
        return check(*args)

    check = beton.check_beton
    monkeypatch.setattr(beton, "check_beton", check_then_signal)
    result = run_main("scripts/write_datasets.py", "--data.source", "synthetic", "--data.path", tmp_path,
                      "--data.synthetic_train", 100, "--data.synthetic_test", 30, "--data.writer_processes", 1)
    assert result.returncode == 130
    assert error_lines(result.stderr)[-1] == f"stopped by SIGTERM: no .beton file or dataset.json was written to {tmp_path}"
    assert list(tmp_path.iterdir()) == []
