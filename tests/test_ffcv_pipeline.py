"""ffcv_pipeline.py: FFCV's pipelines as the kit builds them, read in file order, step by step."""
import contextlib
import dataclasses
import itertools
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
from ffcv.loader import Loader, OrderOption
from ffcv.pipeline.operation import Operation
from ffcv.transforms import NormalizeImage, ToDevice, ToTensor, ToTorchImage

from fast_cifar.compute import TORCH_THREADS
from fast_cifar.augment import CROP_PADDING, Augmentation, Crops, augment_on_device, draw_crops, pad_with
from fast_cifar.beton import load_dataset_info
from fast_cifar.data import BatchFormat, Sampling, make_loader
from fast_cifar.ffcv_pipeline import EpochLoader, NormalizeStep, image_pipeline, label_pipeline, pixel_pass

from helpers import all_batches

CPU = torch.device("cpu")
IDENTITY = np.arange(256, dtype=np.uint8)[:, None].repeat(3, 1)  # a table that leaves pixels as they are


def sequential_loader(info, augment, pipeline=None):
    """The train pipeline (augment=True) or the test one, or `pipeline`, over the test split in file order."""
    pipeline = pipeline or image_pipeline(info, BatchFormat(100, CPU), Sampling(train=augment))
    return Loader(str(info.path("test")), batch_size=100, num_workers=2, order=OrderOption.SEQUENTIAL,
                  drop_last=False, pipelines={"image": pipeline, "label": label_pipeline(BatchFormat(100, CPU))})


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


@pytest.mark.slow  # FFCV compiles a pipeline per loader: seconds
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


@pytest.mark.slow  # FFCV compiles a pipeline per loader: seconds
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
    # can read a later batch. Every transfer in the kit's pipelines must wait for its copy. (A GPU's
    # pipelines, built for the meta device: nothing runs.)
    info = load_dataset_info(synthetic_folder)
    for train in (True, False):
        batches = BatchFormat(64, torch.device("meta"))
        pipelines = image_pipeline(info, batches, Sampling(train)) + label_pipeline(batches)
        transfers = [op for op in pipelines if isinstance(op, ToDevice)]
        assert len(transfers) == 2 and not any(op.non_blocking for op in transfers)


@pytest.mark.slow  # FFCV compiles a pipeline per loader: seconds
def test_on_a_cpu_the_batches_are_normalized_in_the_pass_and_not_copied(synthetic_folder):
    # On a CPU the lookup runs inside the numba pass (benchmarks/results/loader_steps_cpu: as a torch op
    # afterwards it cost most of the loader's time), and there is nothing to transfer.
    info = load_dataset_info(synthetic_folder)
    for dtype in (torch.float32, torch.bfloat16):
        pipeline = image_pipeline(info, BatchFormat(64, CPU, dtype), Sampling(train=True))
        assert not [op for op in pipeline if isinstance(op, (ToDevice, NormalizeStep))]
        images, _ = next(iter(make_loader(info, "test", BatchFormat(64, CPU, dtype), Sampling(False), "ffcv", 2)))
        device_images, _ = next(iter(make_loader(info, "test", BatchFormat(64, CPU, dtype), Sampling(False), "device")))
        assert images.dtype == dtype and torch.equal(images, device_images)


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
    loader = make_loader(info, "train", BatchFormat(16, CPU), Sampling(train=True), "ffcv", 2)
    for stop_after in (1, len(loader)):
        batches = iter(loader)
        for _ in range(stop_after):
            next(batches)
        batches.close()
        assert not [thread for thread in threading.enumerate() if isinstance(thread, EpochIterator)]


class FailingStep(Operation):
    """A pipeline step that raises on the batch `fail_at` (counting from 0)."""

    def __init__(self, fail_at):
        super().__init__()
        self.fail_at, self.batches = fail_at, 0

    def generate_code(self):
        def step(images, _):
            self.batches += 1
            if self.batches > self.fail_at:
                raise ValueError("a broken step")
            return images
        return step

    def declare_state_and_memory(self, previous_state):
        return dataclasses.replace(previous_state, jit_mode=False), None


def test_a_step_that_fails_raises_in_the_consumer_instead_of_hanging(synthetic_folder):
    # FFCV's filling thread dies on an error and its consumer waits for the next batch forever.
    info = load_dataset_info(synthetic_folder)
    loader = EpochLoader(info.path("test"), CPU, batch_size=50, num_workers=2, order=OrderOption.SEQUENTIAL,
                         pipelines={"image": [SimpleRGBImageDecoder(), FailingStep(fail_at=2), ToTensor()],
                                    "label": [IntDecoder(), ToTensor()]})
    outcome = []

    def consume():
        try:
            outcome.append(len(list(loader)))
        except ValueError as error:
            outcome.append(error)

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    consumer.join(timeout=60)
    assert not consumer.is_alive(), "the consumer still waits for a batch"
    assert isinstance(outcome[0], ValueError)


@pytest.mark.skipif(TORCH_THREADS < 2, reason="one CPU thread: a loader cannot take any from training")
def test_a_loader_with_fewer_threads_leaves_training_its_own(synthetic_folder):
    # ffcv 1.0.2 sets torch's thread count to its worker count when a loader is built and at every pass: a
    # 1-thread loader would train on one core, and train differently from the device loader.
    loader = make_loader(load_dataset_info(synthetic_folder), "train", BatchFormat(64, CPU), Sampling(train=True),
                         "ffcv", threads=1)
    assert torch.get_num_threads() == TORCH_THREADS
    with contextlib.closing(iter(loader)) as batches:
        next(batches)
        assert torch.get_num_threads() == TORCH_THREADS


def test_the_two_executors_crop_flip_and_cut_out_alike():
    images = np.random.default_rng(0).integers(0, 256, (300, 32, 32, 3), dtype=np.uint8)
    fill = np.array([120, 121, 122], dtype=np.uint8)
    for augmentation in (Augmentation(), Augmentation(flip="alternating", cutout=12)):
        crops = draw_crops(seed=5, epoch=1, indices=np.arange(300), augmentation=augmentation)
        by_ffcv = np.empty_like(images)
        plan = np.stack([crops.dy, crops.dx, crops.flip, crops.cy, crops.cx], axis=1)
        pixel_pass(images, by_ffcv, plan, IDENTITY, fill, crops.cutout)
        padded = pad_with(torch.from_numpy(images), torch.from_numpy(fill))
        on_device = augment_on_device(padded, torch.arange(300), Crops(
            *(torch.from_numpy(getattr(crops, key)) for key in ("dy", "dx", "flip", "cy", "cx")), crops.cutout),
            torch.from_numpy(fill))
        assert torch.equal(on_device, torch.from_numpy(by_ffcv))

    # and it is the crop it says: image 0 shifted by (dy, dx), mirrored where drawn, its square filled
    dy, dx, flip, cy, cx = (int(getattr(crops, key)[0]) for key in ("dy", "dx", "flip", "cy", "cx"))
    expected = np.pad(images[0], ((4, 4), (4, 4), (0, 0)))[4 + dy:36 + dy, 4 + dx:36 + dx]
    expected[np.pad(np.zeros((32, 32), bool), 4, constant_values=True)[4 + dy:36 + dy, 4 + dx:36 + dx]] = fill
    expected = expected[:, ::-1].copy() if flip else expected
    expected[cy:cy + 12, cx:cx + 12] = fill
    assert np.array_equal(by_ffcv[0], expected)
