"""data.py: both loaders (FFCV's through make_loader, the device loader), the order, normalization and the
epoch's sample check. FFCV's pipeline on its own: test_ffcv_pipeline.py."""
import numpy as np
import pytest
import torch

from fast_cifar.augment import Augmentation
from fast_cifar.beton import load_dataset_info
from fast_cifar.data import (BatchFormat, SampleCheck, Sampling, last_batch_size, make_loader,
                              shuffled_positions, subset_indices)
from fast_cifar.errors import WrongSamples
from fast_cifar.sources import make_synthetic

from helpers import FaultyLoader, all_batches

CPU = torch.device("cpu")


def loader(info, split, size=64, dtype=torch.float32, kind="ffcv", **sampling):
    """make_loader on the CPU, training (shuffled, augmented) on the train split."""
    return make_loader(info, split, BatchFormat(size, CPU, dtype), Sampling(train=split == "train", **sampling), kind,
                       threads=2)


def test_train_loader_batches(synthetic_folder):
    info = load_dataset_info(synthetic_folder)
    train = loader(info, "train")
    assert len(train) == 512 // 64
    images, labels = next(iter(train))
    assert images.shape == (64, 3, 32, 32) and images.dtype == torch.float32
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert labels.shape == (64,) and labels.dtype == torch.int64
    assert 0 <= labels.min() and labels.max() < 10


@pytest.mark.slow
def test_test_loader_is_sequential_complete_and_normalized(real_subset_folder):
    info = load_dataset_info(real_subset_folder)
    images, labels = all_batches(loader(info, "test", 64, torch.bfloat16))
    assert images.dtype == torch.bfloat16 and images.shape == (200, 3, 32, 32)
    assert labels.tolist() == sorted(labels.tolist())  # file order: the copy is sorted by class
    assert np.bincount(labels.numpy()).tolist() == [20] * 10
    # normalized with the train split's statistics: about zero mean and unit std on the test split (of 200
    # photos: raw pixels would be near 120 and 60)
    per_channel = images.float().transpose(0, 1).reshape(3, -1)
    np.testing.assert_allclose(per_channel.mean(1).numpy(), 0, atol=0.15)
    np.testing.assert_allclose(per_channel.std(1).numpy(), 1, atol=0.15)


def test_subset_is_fixed_random_and_sorted():
    first, second = subset_indices(1000, 100), subset_indices(1000, 100)
    assert np.array_equal(first, second) and np.all(np.diff(first) > 0)
    assert first.max() > 500  # spread over the file, not its first (single-class) part
    assert subset_indices(1000, 0) is None and subset_indices(50, 100) is None


def in_sample_order(loader, epoch, seed):
    """One epoch of a shuffled loader, put back in sample order (FFCV draws the order from seed + epoch)."""
    loader.next_epoch = epoch
    images = all_batches(loader)[0]
    order = np.random.default_rng(seed + epoch).permutation(loader.indices)
    return images[np.argsort(order)]


@pytest.mark.slow  # FFCV compiles a pipeline per loader: seconds
def test_crops_and_flips_follow_from_the_seed_and_change_every_epoch(synthetic_folder):
    info = load_dataset_info(synthetic_folder)

    first, again, other = (loader(info, "train", seed=seed) for seed in (3, 3, 4))
    assert torch.equal(in_sample_order(first, 0, 3), in_sample_order(again, 0, 3))
    assert torch.equal(in_sample_order(first, 1, 3), in_sample_order(again, 1, 3))
    epoch_0, epoch_1 = in_sample_order(first, 0, 3), in_sample_order(first, 1, 3)
    changed = (epoch_0 != epoch_1).flatten(1).any(1).float().mean()
    assert changed > 0.8  # nearly every image is cropped or flipped anew
    assert not torch.equal(in_sample_order(other, 0, 4), epoch_0)


def test_loaders_report_their_last_batch(synthetic_folder):
    info = load_dataset_info(synthetic_folder)  # 200 test images
    for kind in ("ffcv", "device"):
        assert last_batch_size(loader(info, "test", kind=kind)) == 8
        shard = loader(info, "test", kind=kind, shard=(1, 3))
        assert shard.shard_size == 67 and last_batch_size(shard) == 3  # images 1, 4, ..., 199


# --- the GPU data path (run here on the CPU) ---------------------------------------


def test_device_loader_test_batches_equal_ffcv(synthetic_folder):
    info = load_dataset_info(synthetic_folder)
    ffcv_images, ffcv_labels = all_batches(loader(info, "test"))
    device = loader(info, "test", kind="device")
    assert len(device) == 4  # 200 = 3 x 64 + 8: the last partial batch is kept for evaluation
    images, labels = all_batches(device)
    assert torch.equal(images, ffcv_images) and torch.equal(labels, ffcv_labels)
    assert next(iter(device))[0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("subset, augmentation", [(0, Augmentation()), (300, Augmentation()),
                                                  (0, Augmentation(flip="alternating", cutout=12))])
def test_both_loaders_give_the_same_training_batches(synthetic_folder, subset, augmentation):
    # One order (FFCV's) and one draw of crops, flips and cutouts: a seed gives bit-identical batches on
    # either loader.
    info = load_dataset_info(synthetic_folder)
    ffcv, device = (loader(info, "train", 100, seed=7, subset=subset, kind=kind, augmentation=augmentation)
                    for kind in ("ffcv", "device"))
    assert len(ffcv) == len(device) == (subset or 512) // 100
    for epoch in (1, 2):
        ffcv.next_epoch = device.next_epoch = epoch
        assert np.array_equal(ffcv.expected_labels(), device.expected_labels())
        pairs = list(zip(ffcv, device))
        assert len(pairs) == len(ffcv)
        for (ffcv_images, ffcv_labels), (device_images, device_labels) in pairs:
            assert torch.equal(ffcv_images, device_images) and torch.equal(ffcv_labels, device_labels)


def test_the_order_is_ffcvs_as_positions():
    # FFCV permutes its sample indices; the device loader permutes positions in its subset and looks them up.
    indices = np.random.default_rng(0).choice(1000, 300, replace=False)
    rng = np.random.default_rng(3 + 5)
    assert np.array_equal(rng.permutation(indices), indices[shuffled_positions(300, seed=3, epoch=5)])
    halves = [shuffled_positions(301, 3, 5, shard=(rank, 2)) for rank in (0, 1)]
    both = np.concatenate(halves)  # FFCV's sampler pads to a multiple of the ranks by repeating a sample
    assert len(both) == 302 and set(both.tolist()) == set(range(301))


def test_device_train_loader_is_seeded_shuffled_and_drops_the_last_batch(synthetic_folder):
    info = load_dataset_info(synthetic_folder)
    first, second = (loader(info, "train", 100, torch.bfloat16, "device", seed=3) for _ in range(2))
    assert len(first) == 5  # 512 // 100
    epoch_one, labels_one = all_batches(first)
    assert epoch_one.dtype == torch.bfloat16 and epoch_one.shape == (500, 3, 32, 32)
    assert torch.equal(epoch_one, all_batches(second)[0])  # same seed, same batches
    epoch_two, labels_two = all_batches(first)
    assert not torch.equal(labels_one, labels_two)  # a new order each epoch
    written = torch.from_numpy(np.bincount(make_synthetic(512, 200)["train"].labels, minlength=10))
    assert (torch.bincount(labels_one, minlength=10) <= written).all()  # each image at most once


# --- the check every epoch makes --------------------------------------------------------------------


def one_pass(loader, split="train"):
    check = SampleCheck(loader)
    for _, labels in loader:
        check.add(labels)
    return check.verify(split)


@pytest.mark.parametrize("fault", ["repeat", "swap"])
def test_the_check_fires_on_a_faulty_loader(synthetic_folder, fault):
    info = load_dataset_info(synthetic_folder)
    faulty = FaultyLoader(loader(info, "train", seed=1), fault)
    with pytest.raises(WrongSamples, match=r"train split's loader delivered 512 samples where its order holds 512, "
                                           r"\d+ of them not the sample the order names") as error:
        one_pass(faulty)
    assert error.value.exit_code == 5


def test_the_check_counts_missing_and_extra_samples(synthetic_folder):
    info = load_dataset_info(synthetic_folder)
    test = loader(info, "test")  # 200 images, batches of 64
    short = type("Short", (), {"device": CPU, "expected_labels": test.expected_labels,
                               "__iter__": lambda self: iter(list(test)[:-1])})()
    with pytest.raises(WrongSamples, match="delivered 192 samples where its order holds 200, 8 of them"):
        one_pass(short, "test")


@pytest.mark.parametrize("kind", ["ffcv", "device"])
def test_the_check_passes_on_both_loaders(synthetic_folder, kind):
    info = load_dataset_info(synthetic_folder)
    train, test = loader(info, "train", seed=2, kind=kind), loader(info, "test", kind=kind)
    for epoch in (1, 2):
        train.next_epoch = epoch
        assert one_pass(train) == 512 and one_pass(test, "test") == 200
