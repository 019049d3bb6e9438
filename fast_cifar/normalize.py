"""Normalization, (x - mean) / std per channel, as a lookup: each channel's 256 possible values computed
once, in float64, then rounded to the compute dtype. Every loader reads the same table, so every path
gives the same values bit for bit (and FFCV's own NormalizeImage's, in float32)."""
import torch


def normalization_table(mean, std, dtype, device=None):
    """(256, 3): row v holds pixel value v normalized, per channel, in `dtype`."""
    table = (torch.arange(256, dtype=torch.float64)[:, None] - torch.tensor(mean, dtype=torch.float64)) \
        / torch.tensor(std, dtype=torch.float64)
    return table.to(device=device, dtype=dtype)


class Normalize:
    """uint8 NCHW images to the compute dtype through `normalization_table`, on any device: `DeviceLoader`'s
    last step, and FFCV's on a GPU, after the transfer (ffcv_pipeline.py: uint8 travels, 4x fewer bytes)."""

    def __init__(self, mean, std, dtype, device):
        self.table = normalization_table(mean, std, dtype, device)
        self.channels = torch.arange(3, device=device)

    def __call__(self, images):
        # Index in NHWC order, so a channels-last input gives a channels-last output without a copy.
        normalized = self.table[images.permute(0, 2, 3, 1).long(), self.channels].permute(0, 3, 1, 2)
        return normalized if images.is_contiguous(memory_format=torch.channels_last) else normalized.contiguous()
