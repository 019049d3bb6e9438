"""ffcv_pipeline.py: FFCV's pipelines as the kit builds them, read in file order, step by step."""
import contextlib
import itertools
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from ffcv.fields.decoders import SimpleRGBImageDecoder
from ffcv.loader import Loader, OrderOption
from ffcv.transforms import NormalizeImage, ToDevice, ToTensor, ToTorchImage

from fast_cifar import TORCH_THREADS
from fast_cifar.augment import CROP_PADDING
from fast_cifar.beton import load_dataset_info
from fast_cifar.data import Batches, Sampling, make_loader
from fast_cifar.ffcv_pipeline import image_pipeline, label_pipeline

from helpers import all_batches

CPU = torch.device("cpu")


def sequential_loader(info, augment, pipeline=None):
    """The train pipeline (augment=True) or the test one, or `pipeline`, over the test split in file order."""
    pipeline = pipeline or image_pipeline(info, Batches(100, CPU), Sampling(train=augment))
    return Loader(str(info.path("test")), batch_size=100, num_workers=2, order=OrderOption.SEQUENTIAL,
                  drop_last=False, pipelines={"image": pipeline, "label": label_pipeline(Batches(100, CPU))})


def find_transform(augmented, plain, fill):
    """The (flip, dy, dx) under which `augmented` is `plain` translated and mirrored, or None."""
    size = plain.shape[-1]
    for flip, dy, dx in itertools.product((False, True), *[range(-CROP_PADDING, CROP_PADDING + 1)] * 2):
        candidate = augmented.flip(-1) if flip else augmented
        expected = fill.expand_as(plain).clone()
        rows, cols = slice(max(0, -dy), min(size, size - dy)), slice(max(0, -dx), min(size, size - dx))
        source_rows, source_cols = slice(max(0, dy), min(size, size + dy)), slice(max(0, dx), min(size, size + dx))
        expected[:, rows, cols] = plain[:, source_rows, source_cols]
        if torch.allclose(candidate, expected, atol=1e-5):
            return flip, dy, dx
    return None


def test_augmentation_is_a_random_translate_and_flip(synthetic_folder):
    info = load_dataset_info(synthetic_folder)
    plain, labels = all_batches(sequential_loader(info, augment=False))
    augmented, augmented_labels = all_batches(sequential_loader(info, augment=True))
    assert torch.equal(labels, augmented_labels)
    # the padding colour is the data set's mean, rounded to a pixel value, then normalized
    mean, std = torch.tensor(info.mean), torch.tensor(info.std)
    fill = ((mean.round() - mean) / std).view(3, 1, 1)
    transforms = [find_transform(a, p, fill) for a, p in zip(augmented, plain)]
    assert None not in transforms  # every image is exactly one of the 162 crops and flips
    flips = np.mean([t[0] for t in transforms])
    shifted = np.mean([(t[1], t[2]) != (0, 0) for t in transforms])
    assert 0.3 < flips < 0.7 and shifted > 0.8
    assert len({t[1:] for t in transforms}) > 20  # many different offsets


def test_normalize_matches_ffcvs_normalize_image(synthetic_folder):
    # Normalize runs after the transfer, on the device, in the compute dtype; FFCV's NormalizeImage, on
    # the CPU before it, gives the same float32 values.
    info = load_dataset_info(synthetic_folder)
    ours, labels = all_batches(sequential_loader(info, False))
    ffcv_pipeline = [SimpleRGBImageDecoder(), NormalizeImage(np.array(info.mean), np.array(info.std), np.float32),
                     ToTensor(), ToDevice(CPU), ToTorchImage()]
    theirs, their_labels = all_batches(sequential_loader(info, False, ffcv_pipeline))
    assert torch.equal(ours, theirs) and torch.equal(labels, their_labels)
    assert next(iter(sequential_loader(info, False)))[0].is_contiguous(memory_format=torch.channels_last)


def test_the_transfer_waits_for_its_copy(synthetic_folder):
    # FFCV refills its pinned host buffers without waiting for the GPU: an asynchronous copy out of one
    # can read a later batch. Every transfer in the kit's pipelines must wait for its copy.
    info = load_dataset_info(synthetic_folder)
    for train in (True, False):
        loader = make_loader(info, "train" if train else "test", Batches(64, CPU), Sampling(train), "ffcv", 2)
        transfers = [op for spec in loader.pipeline_specs.values() for op in spec.transforms
                     if isinstance(op, ToDevice)]
        assert len(transfers) == 2 and not any(op.non_blocking for op in transfers)


@pytest.mark.slow
def test_importing_the_pipeline_keeps_torchs_thread_count():
    # ffcv's import sets torch to one CPU thread; ffcv_pipeline.py puts the default back.
    code = ("import torch; n = torch.get_num_threads(); import fast_cifar.ffcv_pipeline; "
            "assert torch.get_num_threads() == n, (n, torch.get_num_threads())")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_consumer_that_stops_early_leaves_no_filling_thread(synthetic_folder):
    # FFCV fills batches ahead in a daemon thread; one left running numba code at the interpreter's exit can
    # abort the process. Stopping after a batch, or at the epoch's end, must end it before going on.
    from ffcv.loader.epoch_iterator import EpochIterator

    info = load_dataset_info(synthetic_folder)
    loader = make_loader(info, "train", Batches(16, CPU), Sampling(train=True), "ffcv", 2)
    for stop_after in (1, len(loader)):
        batches = iter(loader)
        for _ in range(stop_after):
            next(batches)
        batches.close()
        assert not [thread for thread in threading.enumerate() if isinstance(thread, EpochIterator)]


@pytest.mark.skipif(TORCH_THREADS < 2, reason="one CPU thread: a loader cannot take any from training")
def test_a_loader_with_fewer_threads_leaves_training_its_own(synthetic_folder):
    # ffcv 1.0.2 sets torch's thread count to its worker count when a loader is built and at every pass: a
    # 1-thread loader would train on one core, and train differently from the device loader.
    loader = make_loader(load_dataset_info(synthetic_folder), "train", Batches(64, CPU), Sampling(train=True),
                         "ffcv", threads=1)
    assert torch.get_num_threads() == TORCH_THREADS
    with contextlib.closing(iter(loader)) as batches:
        next(batches)
        assert torch.get_num_threads() == TORCH_THREADS
