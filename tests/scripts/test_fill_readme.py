import json

from helpers import error_lines, record_of_shape, run_main

RECORD = record_of_shape(
    finished=True, started_at="2026-11-24T20:00:00", config={},
    command="train.py --config /scratch/repo/rn18_configs/24ep.yaml --data.path /scratch/data --output.dir "
            "/scratch/runs --output.name 24ep --data.loader device",
    device={"type": "cuda", "name": "NVIDIA H100 80GB HBM3"},
    versions={"torch": "2.11.0", "ffcv": "1.0.2", "python": "3.12.3", "cuda": "12.8"},
    data={"source": "image folder at /scratch/copies/cifar10-jpeg.tar.gz", "train_images_per_epoch": 1000},
    model={"arch": "resnet18", "parameters": 11173962},
    epochs=[{"epoch": 1, "test_accuracy": 0.91, "train_seconds": 1.5, "eval_seconds": 0.25, "elapsed_seconds": 7.0},
            {"epoch": 2, "test_accuracy": 0.935, "train_seconds": 2.5, "eval_seconds": 0.25, "elapsed_seconds": 9.8}],
    best={"test_accuracy": 0.935, "epoch": 2}, last={"test_accuracy": 0.935, "epoch": 2},
    timings={"data_setup": 1.0, "loader_warmup": 2.0, "compile": 3.0, "training": 4.0, "evaluation": 0.5,
             "total": 12.0, "time_to_accuracy": {"0.9": 2.2, "0.95": None},
             "time_to_accuracy_end_to_end": {"0.9": 8.5, "0.95": None}},
)


def test_fills_the_section_and_stores_the_files(tmp_path):
    run = tmp_path / "runs" / "gpu"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps(RECORD))
    (run / "loss_accuracy_plots.png").write_bytes(b"png")
    readme = tmp_path / "README.md"
    readme.write_text("# title\n<!-- results:start -->\nold\n<!-- results:end -->\ntail\n")
    store = tmp_path / "benchmarks" / "results" / "h100"
    result = run_main("scripts/fill_readme.py", run, "--fill.store", store, "--fill.readme", readme)
    assert result.returncode == 0, result.stderr
    text = readme.read_text()
    assert text.startswith("# title\n<!-- results:start -->\n") and text.endswith("<!-- results:end -->\ntail\n")
    assert "\nold\n" not in text and "NVIDIA H100 80GB HBM3" in text
    assert "**Test accuracy at the last epoch: 93.50%** (epoch 2 of 2)" in text
    assert "Maximum over the epochs: 93.50% at epoch 2" in text
    assert "| training throughput | 500 images/s |" in text  # 2 epochs x 1000 images / 4 s
    assert "| the loaders' first batches (FFCV JIT-compiles its pipelines) | 2.00 |" in text
    # the command and the data as a reader can repeat them, without the folders of the machine that ran them
    assert "Command: `python fast_cifar/train.py --config rn18_configs/24ep.yaml --data.loader device`" in text
    assert "data: image folder at cifar10-jpeg.tar.gz," in text and "/scratch" not in text
    assert "| test accuracy not reached | 95% |" in text and "time to 95%" not in text
    assert "| time to 90% test accuracy: end to end, from the run's start | 8.50 |" in text
    assert "](benchmarks/results/h100/loss_accuracy_plots.png)" in text
    assert (store / "results.json").exists() and (store / "loss_accuracy_plots.png").exists()


def test_unfinished_run_is_refused(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(RECORD | {"finished": False}))
    result = run_main("scripts/fill_readme.py", tmp_path, "--fill.readme", tmp_path / "README.md")
    assert result.returncode == 2 and "unfinished" in error_lines(result.stderr)[0]


def test_ctrl_c_mid_fill_is_one_line_and_leaves_the_readme_as_it_was(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(RECORD))
    readme = tmp_path / "README.md"
    original = "# title\n<!-- results:start -->\nold\n<!-- results:end -->\n"
    readme.write_text(original)
    result = run_main("scripts/fill_readme.py", run, "--fill.readme", readme, interrupt_in="render")
    assert result.returncode == 130 and error_lines(result.stderr) == ["stopped by SIGINT"]
    assert readme.read_text() == original and sorted(path.name for path in tmp_path.iterdir()) == ["README.md", "run"]
