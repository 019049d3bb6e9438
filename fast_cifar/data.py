"""The input pipeline: from .beton files to normalized batches on the device.

Two loaders make the same kind of batch (`--data.loader`; auto picks device on a GPU, ffcv on a CPU):

ffcv: FFCV's Loader. Per batch, on the CPU, in JIT-compiled (numba) threads:
    decode raw uint8 HWC -> random crop (pad 4, crop back to 32x32) and random flip, drawn from
    the loader's seed and the batch's samples (`SeededCropAndFlip`)
then, as torch ops:
    to tensor -> to the GPU -> channels-last NCHW view -> normalize into the compute dtype.
    (Training on a CPU, normalization joins the compiled stage instead: 1.3x the images/s.)
device: `DeviceLoader` reads the split once into device memory as uint8 and does the
    same crop, flip and normalization there, batched, with no per-step host work.

The test pipelines are the same minus the two augmentations. `make_torchvision_loader` is
plain PyTorch's path (PIL transforms in DataLoader workers), the baseline benchmarks/ measures against.
"""
import dataclasses
import os

import numba
import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision import transforms
from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
from ffcv.loader import Loader, OrderOption
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.operation import Operation
from ffcv.transforms import Convert, NormalizeImage, Squeeze, ToDevice, ToTensor, ToTorchImage

from fast_cifar import TORCH_THREADS
from fast_cifar.beton import read_split

torch.set_num_threads(TORCH_THREADS)  # importing ffcv set it to 1: see fast_cifar/__init__.py

CROP_PADDING = 4


class Normalize(nn.Module):
    """uint8 pixels to (x - mean) / std in the compute dtype, as one lookup per pixel.

    Why not FFCV's own NormalizeImage: on a GPU it needs cupy, and it writes float16
    or float32 only, never bf16; this torch module runs after the transfer on any
    device and writes the compute dtype directly.

    The table holds the 256 possible values of each channel, computed in float64,
    so the result is exact and matches FFCV's own NormalizeImage bit for bit.
    """

    def __init__(self, mean, std, dtype, device):
        super().__init__()
        table = (torch.arange(256, dtype=torch.float64)[:, None] - torch.tensor(mean, dtype=torch.float64)) \
            / torch.tensor(std, dtype=torch.float64)
        self.table = table.to(device=device, dtype=dtype)  # (256, 3)
        self.channels = torch.arange(3, device=device)

    def forward(self, images):
        # Index in NHWC order, so a channels-last input gives a channels-last output without a copy.
        normalized = self.table[images.permute(0, 2, 3, 1).long(), self.channels].permute(0, 3, 1, 2)
        return normalized if images.is_contiguous(memory_format=torch.channels_last) else normalized.contiguous()


class SeededCropAndFlip(Operation):
    """A random translation by up to `padding` pixels (the gap filled with `fill`), then a horizontal flip
    with probability 1/2: FFCV's RandomTranslate and RandomHorizontalFlip in one JIT-compiled step.

    Why not FFCV's own: they draw from numba's per-thread random states, which the
    loader's seed never sets, so two runs with the same seed see different crops.
    Here each image's crop and flip come from a small hash of the loader's seed, the
    batch's sample indices and the image's place in the batch: no random state at all,
    so threads cannot change them. As FFCV draws each epoch's order from (seed,
    epoch), the crops and flips follow from (seed, epoch) and change every epoch.
    """

    def __init__(self, padding, fill, seed):
        super().__init__()
        self.padding, self.fill, self.seed = padding, np.array(fill, dtype=np.uint8), seed

    def generate_code(self):
        parallel_range = Compiler.get_iterator()
        pad, fill, seed = self.padding, self.fill, self.seed
        prime = 2_147_483_647  # the Lehmer (MINSTD) generator's modulus: every product fits in int64
        choices = 2 * pad + 1

        def crop_and_flip(images, out, indices):
            count, height, width, channels = images.shape
            batch_hash = seed % prime
            for index in indices:
                batch_hash = (batch_hash * 1_000_003 + index) % prime
            for i in parallel_range(count):
                state = 1 + (batch_hash + 7_919 * i) % (prime - 1)
                for _ in range(3):  # a few Lehmer steps spread neighbouring states apart
                    state = state * 48_271 % prime
                dy, dx = state % choices - pad, state // choices % choices - pad
                flip = state // (choices * choices) % 2
                # One pass: output pixel (r, c) is input pixel (r + dy, c' + dx), c' = c or its mirror,
                # or the fill colour where that falls outside the image.
                for r in range(height):
                    source_row = r + dy
                    for c in range(width):
                        source_col = (width - 1 - c if flip else c) + dx
                        inside = 0 <= source_row < height and 0 <= source_col < width
                        for k in range(channels):
                            out[i, r, c, k] = images[i, source_row, source_col, k] if inside else fill[k]
            return out

        crop_and_flip.is_parallel = True
        crop_and_flip.with_indices = True
        return crop_and_flip

    def declare_state_and_memory(self, previous_state):
        return (dataclasses.replace(previous_state, jit_mode=True),
                AllocationQuery(previous_state.shape, previous_state.dtype))


@dataclasses.dataclass(frozen=True)
class Batches:
    """What a loader delivers: batches of `size` images on `device`, normalized into `dtype`."""
    size: int
    device: torch.device
    dtype: torch.dtype = torch.float32
    channels_last: bool = True


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Which images, in what order: shuffled and augmented from `seed` when `train`, else in file order;
    a fixed random `subset` (0: all); `shard` = (rank, number of ranks), each rank reading its own part."""
    train: bool
    seed: int = 0
    subset: int = 0
    shard: tuple = (0, 1)


def image_pipeline(info, batches, augment, seed=0, normalize_after_transfer=None):
    """FFCV's image pipeline. Normalizing after the transfer (the default on a GPU) moves uint8, 4x
    fewer bytes, and normalizes with `Normalize` on the device; before it (the default on a CPU),
    FFCV's NormalizeImage runs inside the compiled, multi-threaded stage. Both give the same values."""
    device, dtype, channels_last = batches.device, batches.dtype, batches.channels_last
    pipeline = [SimpleRGBImageDecoder()]
    if augment:
        # Pad with the data set's mean colour: after normalization it is zero, like zero padding.
        fill = tuple(int(round(channel)) for channel in info.mean)
        pipeline.append(SeededCropAndFlip(CROP_PADDING, fill, seed))
    if normalize_after_transfer is None:
        normalize_after_transfer = device.type == "cuda"
    if normalize_after_transfer:
        return pipeline + [ToTensor(), ToDevice(device, non_blocking=True), ToTorchImage(channels_last=channels_last),
                           Normalize(info.mean, info.std, dtype, device)]
    pipeline += [NormalizeImage(np.array(info.mean), np.array(info.std), np.float32), ToTensor(),
                 ToDevice(device), ToTorchImage(channels_last=channels_last)]
    return pipeline + ([Convert(dtype)] if dtype != torch.float32 else [])


def label_pipeline(device):
    return [IntDecoder(), ToTensor(), ToDevice(device, non_blocking=True), Squeeze(1)]


def subset_indices(records, subset):
    """A fixed random subset (the same in every run), or None for all: files may be sorted by class."""
    if not subset or subset >= records:
        return None
    return np.sort(np.random.default_rng(0).choice(records, subset, replace=False))


def split_size(info, split, subset=0):
    records = info.records[split]
    return min(subset, records) if subset else records


def make_loader(info, split, batches, sampling, kind="ffcv", threads=-1):
    """A loader over one split: shuffled, augmented, last partial batch dropped when `sampling.train`.
    `kind` is "ffcv" (FFCV's Loader, `threads` of them; -1: all cores) or "device" (`DeviceLoader`).

    With several ranks each reads its own shard: a fixed rank-strided slice of the
    test split, and a new slice of each epoch's shuffled order of the train split.
    """
    train, (rank, ranks) = sampling.train, sampling.shard
    indices = subset_indices(info.records[split], sampling.subset)
    if not train and ranks > 1:
        indices = (np.arange(info.records[split]) if indices is None else indices)[rank::ranks]
        sampling = dataclasses.replace(sampling, shard=(0, 1))  # the test shard is taken here, once
    if kind == "device":
        return DeviceLoader(info, split, batches, sampling, indices)
    return Loader(
        str(info.path(split)),
        batch_size=batches.size,
        num_workers=min(threads, numba.config.NUMBA_NUM_THREADS),  # numba refuses more threads than cores
        order=OrderOption.RANDOM if train else OrderOption.SEQUENTIAL,
        drop_last=train,
        seed=sampling.seed,
        indices=indices,
        distributed=train and ranks > 1,  # FFCV shards with torch's DistributedSampler
        pipelines={"image": image_pipeline(info, batches, augment=train, seed=sampling.seed),
                   "label": label_pipeline(batches.device)},
    )


def shard_size(loader):
    """How many samples this process's loader goes through per epoch, a partial last batch included.
    (For FFCV's training loaders over several processes, FFCV shards inside: not counted here.)"""
    return loader.shard_size if isinstance(loader, DeviceLoader) else len(loader.indices)


def last_batch_size(loader):
    """The size of an epoch's last batch: evaluation compiles for it as well as for full batches."""
    return shard_size(loader) - (len(loader) - 1) * loader.batch_size


# --- the GPU data path -----------------------------------------------------------


def crop_and_flip(padded, index, dy, dx, flip):
    """Images `index` of the padded batch, translated by (dy, dx) and mirrored where `flip`.

    Output pixel (r, c) is padded pixel (pad + dy + r, pad + dx + c), or column
    (pad + dx + 31 - c) when flipped: FFCV's RandomTranslate then RandomHorizontalFlip,
    done as one gather.
    """
    size = padded.shape[1] - 2 * CROP_PADDING
    steps = torch.arange(size, device=padded.device)
    rows = (CROP_PADDING + dy)[:, None] + steps
    cols = (CROP_PADDING + dx)[:, None] + torch.where(flip[:, None], size - 1 - steps, steps)
    return padded[index[:, None, None], rows[:, :, None], cols[:, None, :]]


class DeviceLoader:
    """A whole split as uint8 in device memory; each batch is gathered, augmented and normalized there.

    Epoch e draws its order from a generator seeded with (seed, e), the same on every
    rank, and its augmentations from one seeded with (seed, e, rank), so runs with the
    same seed see the same batches.
    """

    def __init__(self, info, split, batches, sampling, indices=None):
        device, train = batches.device, sampling.train
        images, labels = read_split(info.path(split), indices)
        images = torch.from_numpy(images).to(device)
        if train:  # pad once with the mean colour, as FFCV's RandomTranslate does per batch
            fill = torch.tensor([int(round(channel)) for channel in info.mean], dtype=torch.uint8, device=device)
            padded = fill.expand(len(images), 32 + 2 * CROP_PADDING, 32 + 2 * CROP_PADDING, 3).clone()
            padded[:, CROP_PADDING:-CROP_PADDING, CROP_PADDING:-CROP_PADDING] = images
            images = padded
        self.images, self.labels = images, torch.from_numpy(labels).to(device)
        self.batch_size, self.device, self.train, self.seed = batches.size, device, train, sampling.seed
        self.channels_last = batches.channels_last
        self.rank, self.world_size = sampling.shard  # every rank draws the same order and takes its stride of it
        self.normalize = Normalize(info.mean, info.std, batches.dtype, device)
        self.next_epoch = 0  # as FFCV's Loader names it; the training loop sets it

    @property
    def shard_size(self):
        return len(range(self.rank, len(self.labels), self.world_size))

    def __len__(self):
        return self.shard_size // self.batch_size if self.train else -(-self.shard_size // self.batch_size)

    def epoch_order(self, epoch):
        """This rank's samples for `epoch`, in order, and the generator for their augmentations."""
        epoch_seed = self.seed * 100_003 + epoch
        generator = torch.Generator(self.device).manual_seed(epoch_seed)
        count = len(self.labels)
        order = torch.randperm(count, generator=generator, device=self.device) if self.train \
            else torch.arange(count, device=self.device)
        generator.manual_seed(epoch_seed * 1_000 + self.rank)  # each rank its own crops and flips
        return order[self.rank::self.world_size], generator

    def __iter__(self):
        order, generator = self.epoch_order(self.next_epoch)
        self.next_epoch += 1
        for batch in range(len(self)):
            index = order[batch * self.batch_size:(batch + 1) * self.batch_size]
            if self.train:
                shifts = torch.randint(-CROP_PADDING, CROP_PADDING + 1, (2, len(index)), generator=generator,
                                       device=self.device)
                flip = torch.rand(len(index), generator=generator, device=self.device) < 0.5
                images = crop_and_flip(self.images, index, shifts[0], shifts[1], flip)
            else:
                images = self.images[index]
            images = images.permute(0, 3, 1, 2)  # NHWC storage is NCHW channels-last
            yield self.normalize(images if self.channels_last else images.contiguous()), self.labels[index]


# --- plain PyTorch's data path, the baseline the benchmarks measure against -------------------------


class InMemoryCIFAR(torch.utils.data.Dataset):
    """As torchvision.datasets.CIFAR10 works: (N, 32, 32, 3) uint8 images in memory, a PIL image per sample."""

    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def make_torchvision_loader(images, labels, info, batch_size, *, train, workers=None):
    """What a user writes by hand: torchvision transforms on PIL images (a random crop with 4 pixels of zero
    padding and a flip when `train`, then ToTensor and Normalize), batched by a DataLoader, a worker per core."""
    augment = [transforms.RandomCrop(32, padding=CROP_PADDING), transforms.RandomHorizontalFlip()] if train else []
    transform = transforms.Compose([*augment, transforms.ToTensor(),
                                    transforms.Normalize([m / 255 for m in info.mean], [s / 255 for s in info.std])])
    workers = os.cpu_count() if workers is None else workers
    return torch.utils.data.DataLoader(InMemoryCIFAR(images, labels, transform), batch_size=batch_size,
                                       shuffle=train, drop_last=train, num_workers=workers,
                                       pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0)
