"""The input pipeline: from .beton files to normalized batches on the device.

Two loaders make the same kind of batch (`--data.loader`; auto picks device on a GPU, ffcv on a CPU):

ffcv: FFCV's Loader as ffcv_pipeline.py builds it (`EpochLoader`). Per batch, on the CPU, in numba
    threads: decode raw uint8 HWC -> random crop (pad 4, crop back to 32x32), flip and cutout, drawn
    from (seed, epoch, sample index) (`augment.draw_crops`), and on a CPU normalization, in one kernel;
    then, as torch ops: on a GPU, to the device, waiting for the copy, and normalized there
    (normalize.py's `Normalize`); a channels-last NCHW view. Imported only when used: ffcv's import
    takes seconds.
device: `DeviceLoader` reads the split once into device memory as uint8 and does the
    same crop, flip, cutout and normalization there, batched, with no per-step host work.

Both visit the samples in the same order and draw the same crops and flips: a seed gives the same
batches on either. `SampleCheck` proves, every epoch, that a loader delivered its order's samples.
The test pipelines are the same minus the two augmentations. (Plain PyTorch's path, the baseline
benchmarks/ measures against, is benchmarks/plain_pytorch.py's.)
"""
import dataclasses

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from fast_cifar.augment import Augmentation, Crops, augment_on_device, draw_crops, pad_with
from fast_cifar.beton import read_split
from fast_cifar.errors import WrongSamples
from fast_cifar.normalize import Normalize


@dataclasses.dataclass(frozen=True)
class BatchFormat:
    """What a loader delivers: batches of `size` images on `device`, normalized into `dtype`."""
    size: int
    device: torch.device
    dtype: torch.dtype = torch.float32
    channels_last: bool = True


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Which images, in what order: shuffled and augmented from `seed` when `train` (a random crop, and the
    flip and cutout of `augmentation`), else in file order; a fixed random `subset` (0: all); `shard` =
    (rank, number of ranks), each rank reading its own part."""
    train: bool
    seed: int = 0
    subset: int = 0
    shard: tuple = (0, 1)
    augmentation: Augmentation = Augmentation()


def subset_indices(records, subset):
    """A fixed random subset (the same in every run), or None for all: files may be sorted by class."""
    if not subset or subset >= records:
        return None
    return np.sort(np.random.default_rng(0).choice(records, subset, replace=False))


def split_size(info, split, subset=0):
    records = info.records[split]
    return min(subset, records) if subset else records


def shuffled_positions(count, seed, epoch, shard=(0, 1)):
    """The order in which FFCV's RANDOM traversal visits `count` samples in `epoch`, as positions 0..count-1:
    numpy's permutation seeded with seed + epoch, or, over several ranks, torch's DistributedSampler
    (ffcv/traversal_order/random.py). The device loader follows it, so both loaders see the same batches."""
    rank, ranks = shard
    if ranks == 1:
        return np.random.default_rng(seed + epoch).permutation(count)
    sampler = DistributedSampler(range(count), num_replicas=ranks, rank=rank, shuffle=True, seed=seed,
                                 drop_last=False)
    sampler.set_epoch(epoch)
    return np.fromiter(sampler, dtype=np.int64)


def make_loader(info, split, batch_format, sampling, kind="ffcv", threads=-1):
    """A loader over one split: shuffled, augmented, last partial batch dropped when `sampling.train`.
    `kind` is "ffcv" (ffcv_pipeline.py's `EpochLoader`, `threads` of them; -1: all cores) or "device"
    (`DeviceLoader`).

    With several ranks each reads its own shard: a fixed rank-strided slice of the
    test split, and a new slice of each epoch's shuffled order of the train split.
    """
    train, (rank, ranks) = sampling.train, sampling.shard
    indices = subset_indices(info.records[split], sampling.subset)
    if not train and ranks > 1:
        indices = (np.arange(info.records[split]) if indices is None else indices)[rank::ranks]
        sampling = dataclasses.replace(sampling, shard=(0, 1))  # the test shard is taken here, once
    if kind == "device":
        return DeviceLoader(info, split, batch_format, sampling, indices)
    from fast_cifar.ffcv_pipeline import make_ffcv_loader  # ffcv's import costs seconds: only when used
    return make_ffcv_loader(info, split, batch_format, sampling, indices, threads)


def last_batch_size(loader):
    """The size of an epoch's last batch: evaluation compiles for it as well as for full batches."""
    return loader.shard_size - (len(loader) - 1) * loader.batch_size


class SampleCheck:
    """Proof that one pass over a loader delivered what its order says: as many samples, each with its
    own label. Labels are copied into a device buffer as they come (no wait); `verify` compares them
    once, at the end of the pass, where the training loop synchronizes anyway."""

    def __init__(self, loader):
        self.expected = torch.from_numpy(loader.expected_labels()).to(loader.device)
        self.seen = torch.full_like(self.expected, -1)
        self.count = 0

    def add(self, labels):
        end = self.count + len(labels)
        if end <= len(self.expected):
            self.seen[self.count:end].copy_(labels, non_blocking=True)
        self.count = end

    def verify(self, split):
        """The number of samples checked; `WrongSamples` if the pass was not its order."""
        wrong = int((self.seen != self.expected).sum())
        if self.count != len(self.expected) or wrong:
            raise WrongSamples(f"the {split} split's loader delivered {self.count:,} samples where its order holds "
                               f"{len(self.expected):,}, {wrong:,} of them not the sample the order names (by label)")
        return self.count


# --- the GPU data path -----------------------------------------------------------


class DeviceLoader:
    """A whole split as uint8 in device memory; each batch is gathered, augmented and normalized there.

    Epoch e visits the samples in the order FFCV's loader would (`shuffled_positions`) and crops and
    flips them as FFCV's `PixelPass` would (`draw_crops`): same seed, same batches as `EpochLoader`.
    """

    def __init__(self, info, split, batch_format, sampling, indices=None):
        device, train = batch_format.device, sampling.train
        images, labels = read_split(info.path(split), indices)
        images = torch.from_numpy(images).to(device)
        self.fill = torch.tensor(info.fill, dtype=torch.uint8, device=device)
        if train:  # pad once with the mean colour, as `PixelPass` fills the gap per batch
            images = pad_with(images, self.fill)
        self.images, self.labels, self.split_labels = images, torch.from_numpy(labels).to(device), labels
        # the sample indices FFCV would see: the draws hash them, not their place in this subset
        self.sample_ids = np.arange(info.records[split]) if indices is None else indices
        self.batch_size, self.device, self.train, self.seed = batch_format.size, device, train, sampling.seed
        self.augmentation = sampling.augmentation
        self.channels_last = batch_format.channels_last
        self.shard = sampling.shard  # every rank draws the same order and takes its part of it
        self.normalize = Normalize(info.mean, info.std, batch_format.dtype, device)
        self.next_epoch = 0  # as FFCV's Loader names it; the training loop sets it
        self.shard_size = len(self.positions(0))  # the samples a pass goes through, as for FFCV's loader

    def __len__(self):
        return self.shard_size // self.batch_size if self.train else -(-self.shard_size // self.batch_size)

    def positions(self, epoch):
        """This rank's samples for `epoch`, in order, as positions in `self.images`."""
        if self.train:
            return shuffled_positions(len(self.split_labels), self.seed, epoch, self.shard)
        return np.arange(len(self.split_labels))[self.shard[0]::self.shard[1]]

    def expected_labels(self):
        return self.split_labels[self.positions(self.next_epoch)[:len(self) * self.batch_size]]

    def __iter__(self):
        epoch = self.next_epoch
        self.next_epoch += 1
        positions = self.positions(epoch)[:len(self) * self.batch_size]
        plan = [positions]
        if self.train:
            crops = draw_crops(self.seed, epoch, self.sample_ids[positions], self.augmentation)
            plan += [crops.dy, crops.dx, crops.flip, crops.cy, crops.cx]
        plan = torch.from_numpy(np.stack(plan).astype(np.int64)).to(self.device)  # one copy per epoch
        for start in range(0, len(positions), self.batch_size):
            batch = plan[:, start:start + self.batch_size]
            if self.train:
                crops = Crops(*batch[1:3], batch[3].bool(), *batch[4:6], self.augmentation.cutout)
                images = augment_on_device(self.images, batch[0], crops, self.fill)
            else:
                images = self.images[batch[0]]
            images = images.permute(0, 3, 1, 2)  # NHWC storage is NCHW channels-last
            yield self.normalize(images if self.channels_last else images.contiguous()), self.labels[batch[0]]
