"""normalize.py: the lookup every loader normalizes through."""
import torch

from fast_cifar.normalize import Normalize

CPU = torch.device("cpu")


def test_normalize_keeps_the_layout_it_is_given():
    normalize = Normalize([100.0, 110.0, 120.0], [50.0, 60.0, 70.0], torch.float32, CPU)
    images = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8).permute(0, 3, 1, 2)  # channels-last
    expected = (images.double() - torch.tensor([100.0, 110.0, 120.0]).view(1, 3, 1, 1).double()) \
        / torch.tensor([50.0, 60.0, 70.0]).view(1, 3, 1, 1).double()
    out = normalize(images)
    assert out.is_contiguous(memory_format=torch.channels_last) and torch.equal(out, expected.float())
    assert normalize(images.contiguous()).is_contiguous()
