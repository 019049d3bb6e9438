import json
import time

import pytest
import torch

from fast_cifar.errors import UserError
from fast_cifar.plots import plot_curves
from fast_cifar.results import RunRecord, Timer, bf16_peak_tflops, finished_run, profiled, read_run

CPU = torch.device("cpu")


def epoch(number, accuracy, seconds=10.0):
    return dict(epoch=number, train_loss=1.0 / number, train_accuracy=accuracy, test_loss=1.0 / number,
                test_accuracy=accuracy, train_seconds=seconds, eval_seconds=1.0)


def saved_record(folder, finished=False):
    record = RunRecord(folder, {"a": 1}, CPU, argv=[])
    record.add_epoch(**epoch(1, 0.5))
    record.summarize([0.9])
    record.save(finished=finished)
    return json.loads((folder / "results.json").read_text())


@pytest.mark.parametrize("change", ["another version", "a key missing", "a key outside the shape", "a bare epoch",
                                    "a number as text", "finished without its summary"])
def test_a_record_of_another_shape_is_refused(tmp_path, change):
    saved = saved_record(tmp_path)
    assert read_run(tmp_path) == saved
    broken = {"another version": {**saved, "record_version": 0},
              "a key missing": {key: value for key, value in saved.items() if key != "max_lr"},
              "a key outside the shape": {**saved, "speed": 1},
              "a bare epoch": {**saved, "epochs": [{"epoch": 1, "test_accuracy": 0.5}]},
              "a number as text": {**saved, "max_lr": "0.01"},
              "finished without its summary": {**saved, "finished": True}}[change]
    (tmp_path / "results.json").write_text(json.dumps(broken))
    with pytest.raises(UserError):
        read_run(tmp_path)
    assert finished_run(tmp_path) is None


def test_a_writer_cannot_save_a_record_outside_its_shape(tmp_path):
    record = RunRecord(tmp_path, {}, CPU, argv=[])
    record.add_epoch(**epoch(1, 0.5))
    record.data["max_lr"] = "high"
    with pytest.raises(ValueError):
        record.save()
    assert not (tmp_path / "results.json").exists()


def test_summary_times_to_accuracy_and_best(tmp_path):
    record = RunRecord(tmp_path, {"a": 1}, CPU, argv=["--x", "1"])
    for number, accuracy in enumerate([0.85, 0.91, 0.935, 0.93], start=1):
        record.add_epoch(**epoch(number, accuracy))
    best = record.summarize([0.9, 0.93, 0.95])
    assert best == {"test_accuracy": 0.935, "epoch": 3}
    # each epoch costs 10 s of training and 1 s of evaluation
    assert record.timings["time_to_accuracy"] == {"0.9": 22.0, "0.93": 33.0, "0.95": None}
    assert record.timings["training"] == 40.0 and record.timings["evaluation"] == 4.0
    record.data.update(data={"train_images_per_epoch": 100}, model={"arch": "resnet18", "parameters": 1})
    record.save(finished=True)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["finished"] and saved["command"].endswith("--x 1") and saved["config"] == {"a": 1}
    assert torch.__version__.startswith(saved["versions"]["torch"].split("+")[0])
    assert not list(tmp_path.glob(".*.tmp"))


def test_timer_measures_the_block_at_full_precision():
    with Timer(CPU) as timer:
        time.sleep(0.05)
    assert 0.05 <= timer.seconds < 0.5 and timer.recorded == round(timer.seconds, 4)
    with Timer(CPU) as empty:  # rates divide by a block's time, however short: never rounded to 0
        pass
    assert 0 < empty.seconds < 0.01


def test_curves_plot_is_a_png(tmp_path):
    plot_curves([epoch(1, 0.5), epoch(2, 0.6)], tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_bf16_peaks_match_whole_part_names():
    assert bf16_peak_tflops("NVIDIA L4") == 121.0
    assert bf16_peak_tflops("NVIDIA L40S") == 362.1
    assert bf16_peak_tflops("NVIDIA L40") is None  # not an L4: no peak on record
    assert bf16_peak_tflops("NVIDIA H100 PCIe") == 756.0 and bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert bf16_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0 and bf16_peak_tflops("NVIDIA GH200 480GB") == 989.4


def test_the_profile_ranks_the_costliest_operations(tmp_path):
    big, small = torch.randn(256, 256), torch.randn(8, 8)
    with profiled(True, tmp_path, CPU):
        for _ in range(20):
            big @ big
        for _ in range(200):  # many calls, far less time: ranked by time, not calls
            small.relu()
    rows = [line.split("|")[1:-1] for line in (tmp_path / "kernels.md").read_text().splitlines()
            if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    names, shares = [row[1].strip() for row in rows], [float(row[-1]) for row in rows]
    assert names[0] in ("`aten::mm`", "`aten::matmul`") and "aten::relu" in " ".join(names)
    assert shares == sorted(shares, reverse=True) and 99.5 < sum(shares) <= 100.5
    assert "aten::mm" in (tmp_path / "profile.txt").read_text()
