"""Reading figures out of run records: each figure read one way, None where a run has none."""
import pytest

from fast_cifar.report import FIGURES, published_command, source_name, spread, training_images_per_second

from helpers import record_of_shape


def peer_record(**fields):
    """What plain_pytorch.py or airbench_peer.py write: the kit's shape, with fewer figures known."""
    epochs = [{"epoch": n, "test_accuracy": 0.5, "train_seconds": 2.0, "eval_seconds": 1.0, "elapsed_seconds": 3.0 * n}
              for n in (1, 2)]
    return record_of_shape(**{"epochs": epochs, "timings": {"total": 7.0}, "data": {"train_images_per_epoch": 100},
                              **fields})


def test_images_per_second_counts_every_epoch_the_record_holds():
    assert training_images_per_second(peer_record()) == 2 * 100 / 4.0
    assert training_images_per_second(peer_record(data=None)) is None  # a record from before the data was read


def test_every_figure_reads_a_record_with_fewer_figures_known():
    figures = {name: read(peer_record()) for name, read in FIGURES.items()}
    assert figures["last-epoch test accuracy (%)"] == 50.0 and figures["end to end (s)"] == 7.0
    assert figures["with TTA (%)"] is None and figures["max LR"] is None and figures["start-up (s)"] is None


def test_spread_over_seeds_skips_runs_without_the_figure():
    assert spread([1.0, None, 3.0]) == {"mean": 2.0, "std": pytest.approx(2 ** 0.5), "min": 1.0, "max": 3.0, "n": 2}
    assert spread([None]) is None


def test_published_commands_and_sources_name_no_folder_of_the_machine():
    command = ("train.py --config /home/me/repo/rn18_configs/24ep.yaml --data.path /data/c --output.name x "
               "--training.resume /home/me/runs/x --seed 1")  # every setting of kind "place" goes
    assert published_command(command) == "python fast_cifar/train.py --config rn18_configs/24ep.yaml --seed 1"
    assert source_name("image folder at /data/x/cifar10-jpeg.tar.gz") == "image folder at cifar10-jpeg.tar.gz"
