"""The input pipeline: FFCV loaders from .beton files to normalized batches on the device.

Per batch, on the CPU, in FFCV's JIT-compiled (numba) threads:
    decode raw uint8 HWC -> random crop (pad 4, crop back to 32x32) -> random flip
then, as torch ops:
    to tensor -> to device -> channels-last NCHW view -> normalize, cast to the compute dtype.
The test pipeline is the same minus the two augmentations.
"""
import numpy as np
import torch
from torch import nn
from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
from ffcv.loader import Loader, OrderOption
from ffcv.transforms import RandomHorizontalFlip, RandomTranslate, Squeeze, ToDevice, ToTensor, ToTorchImage

CROP_PADDING = 4


class Normalize(nn.Module):
    """(uint8 image - mean) / std on the device, computed in fp32, returned in the compute dtype."""

    def __init__(self, mean, std, dtype, device):
        super().__init__()
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.inverse_std = 1 / torch.tensor(std, device=device).view(1, 3, 1, 1)
        self.dtype = dtype

    def forward(self, images):
        # Elementwise ops keep the channels-last layout of their input.
        return ((images.float() - self.mean) * self.inverse_std).to(self.dtype)


def image_pipeline(info, device, dtype, augment, channels_last=True):
    pipeline = [SimpleRGBImageDecoder()]
    if augment:
        # Pad with the data set's mean colour: after normalization it is zero, like zero padding.
        fill = tuple(int(round(channel)) for channel in info.mean)
        pipeline += [RandomTranslate(padding=CROP_PADDING, fill=fill), RandomHorizontalFlip()]
    return pipeline + [
        ToTensor(),
        ToDevice(device, non_blocking=True),
        ToTorchImage(channels_last=channels_last),
        Normalize(info.mean, info.std, dtype, device),
    ]


def label_pipeline(device):
    return [IntDecoder(), ToTensor(), ToDevice(device, non_blocking=True), Squeeze(1)]


def subset_indices(records, subset):
    """A fixed random subset (the same in every run), or None for all: files may be sorted by class."""
    if not subset or subset >= records:
        return None
    return np.sort(np.random.default_rng(0).choice(records, subset, replace=False))


def make_loader(info, split, batch_size, device, dtype, *, train, num_workers=-1, subset=0, seed=0,
                channels_last=True, distributed=False):
    """A loader over one split: shuffled, augmented, last partial batch dropped when `train`."""
    indices = subset_indices(info.records[split], subset)
    return Loader(
        str(info.path(split)),
        batch_size=batch_size,
        num_workers=num_workers,
        order=OrderOption.RANDOM if train else OrderOption.SEQUENTIAL,
        drop_last=train,
        seed=seed,
        indices=indices,
        distributed=distributed,
        pipelines={
            "image": image_pipeline(info, device, dtype, augment=train, channels_last=channels_last),
            "label": label_pipeline(device),
        },
    )
