"""The plain-PyTorch data path every benchmark row is compared with.

The way torchvision's `datasets.CIFAR10` works: uint8 images held in memory, one
PIL image per sample through torchvision transforms (pad-and-crop, flip,
to-tensor, normalize), batched by a `DataLoader` with one worker per core.
The images are the same bytes the .beton files hold, so only the pipeline differs.
"""
import os

import torch
from PIL import Image
from torchvision import transforms


class InMemoryCIFAR(torch.utils.data.Dataset):
    """Like torchvision.datasets.CIFAR10: (N, 32, 32, 3) uint8 in memory, a PIL image per sample."""

    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def torchvision_loader(images, labels, mean, std, batch_size, train=True, workers=None):
    augment = [transforms.RandomCrop(32, padding=4, fill=tuple(int(round(m)) for m in mean)),
               transforms.RandomHorizontalFlip()] if train else []
    transform = transforms.Compose([*augment, transforms.ToTensor(),
                                    transforms.Normalize([m / 255 for m in mean], [s / 255 for s in std])])
    workers = os.cpu_count() if workers is None else workers
    return torch.utils.data.DataLoader(InMemoryCIFAR(images, labels, transform), batch_size=batch_size,
                                       shuffle=train, drop_last=train, num_workers=workers,
                                       pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0)


def to_device(batches, device, dtype, channels_last):
    """Move DataLoader batches to the device in the layout and dtype the model takes."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for images, labels in batches:
        images = images.to(device, non_blocking=True).to(dtype=dtype, memory_format=memory_format)
        yield images, labels.to(device, non_blocking=True)
