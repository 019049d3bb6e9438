"""ResNet-18 (the recipe's model) and ResNet-9 (the speedrun peer) for 32x32 images, and their
receptive-field report.

ResNet-18: a 3x3 stem (no max-pool, the image is already small), four stages of two
BasicBlocks at width, 2x, 4x and 8x width channels (64-128-256-512 for
ResNet-18), the last three halving the resolution, then global average pooling
and a linear classifier: 17 convs + 1 linear = 18 layers, about 11.2 M
parameters at width 64. A smaller `width` gives the same shape for CPU tests.
"""
import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def conv_bn(in_channels, out_channels, kernel_size=3, stride=1):
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN pairs with a ReLU after each; the second ReLU comes after the residual add."""

    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.conv1 = conv_bn(in_channels, out_channels, stride=stride)
        self.conv2 = conv_bn(out_channels, out_channels)
        # A 1x1 strided conv matches the shapes when the block downsamples or widens.
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = conv_bn(in_channels, out_channels, 1, stride) if needs_projection else nn.Identity()

    def forward(self, x):
        out = torch.relu(self.conv1(x))
        return torch.relu(self.conv2(out) + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, num_classes=10, width=64):
        super().__init__()
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.stem = conv_bn(3, width)
        stages, in_channels = [], width
        for index, channels in enumerate(widths):
            stride = 1 if index == 0 else 2
            stages.append(nn.Sequential(BasicBlock(in_channels, channels, stride), BasicBlock(channels, channels)))
            in_channels = channels
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(widths[-1], num_classes)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = self.pool(self.stages(x))
        return self.classifier(torch.flatten(x, 1))


class ResNet9(nn.Module):
    """The DAWNBench speedrun network, as Page described it ("How to train your ResNet"): a prep conv
    at width, then three stages of conv-BN-ReLU and a 2x2 max-pool at 2x, 4x and 8x width, the first and
    last followed by a residual pair of conv-BN-ReLUs; a global max-pool and a linear layer whose
    output is scaled by 1/8 (it keeps the softmax from saturating early). About 6.6 M parameters at width 64.
    """

    def __init__(self, num_classes=10, width=64):
        super().__init__()

        def conv(in_channels, out_channels, pool=False):
            layers = [*conv_bn(in_channels, out_channels), nn.ReLU(inplace=True)]
            return nn.Sequential(*layers, nn.MaxPool2d(2)) if pool else nn.Sequential(*layers)

        self.prep = conv(3, width)
        self.stage1, self.residual1 = conv(width, 2 * width, pool=True), nn.Sequential(
            conv(2 * width, 2 * width), conv(2 * width, 2 * width))
        self.stage2 = conv(2 * width, 4 * width, pool=True)
        self.stage3, self.residual3 = conv(4 * width, 8 * width, pool=True), nn.Sequential(
            conv(8 * width, 8 * width), conv(8 * width, 8 * width))
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.classifier = nn.Linear(8 * width, num_classes, bias=False)

    def forward(self, x):
        x = self.stage1(self.prep(x))
        x = x + self.residual1(x)
        x = self.stage3(self.stage2(x))
        x = x + self.residual3(x)
        return 0.125 * self.classifier(torch.flatten(self.pool(x), 1))


MODELS = {"resnet18": ResNet18, "resnet9": ResNet9}


def describe_model(model, arch):
    """What every run's record says of its network: its name and its number of parameters."""
    return {"arch": arch, "parameters": sum(p.numel() for p in model.parameters())}


def receptive_fields(model, image_size=32):
    """Each conv on the main path, in forward order: kernel, stride, output size, jump, receptive field.

    jump: distance in input pixels between neighbouring outputs; receptive field:
    the input window one output sees. For a layer with kernel k and stride s,
        rf_out = rf_in + (k - 1) * jump_in,  jump_out = jump_in * s,
        size_out = (size_in + 2 * padding - k) // s + 1.
    The 1x1 shortcuts are skipped: their window lies inside the 3x3 path's. Max-pools count as layers.
    """
    rows, size, jump, field = [], image_size, 1, 1
    for name, layer in model.named_modules():
        if isinstance(layer, nn.MaxPool2d):
            kernel, stride, padding = layer.kernel_size, layer.stride, layer.padding
        elif isinstance(layer, nn.Conv2d) and "shortcut" not in name:
            (kernel, _), (stride, _), (padding, _) = layer.kernel_size, layer.stride, layer.padding
        else:
            continue
        field += (kernel - 1) * jump
        jump *= stride
        size = (size + 2 * padding - kernel) // stride + 1
        rows.append({"layer": name.removesuffix(".0"), "kernel": kernel, "stride": stride,
                     "output_size": size, "jump": jump, "receptive_field": field})
    # Global average pooling: one output that sees every position of the last feature map.
    field += (size - 1) * jump
    rows.append({"layer": "pool", "kernel": size, "stride": size, "output_size": 1,
                 "jump": jump * size, "receptive_field": field})
    return rows


def format_receptive_fields(rows):
    header = f"{'layer':<22}{'kernel':>7}{'stride':>7}{'size':>6}{'jump':>6}{'RF':>6}"
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(f"{row['layer']:<22}{row['kernel']:>7}{row['stride']:>7}{row['output_size']:>6}"
                     f"{row['jump']:>6}{row['receptive_field']:>6}")
    return "\n".join(lines)


def flops_per_image(model, image_size=32):
    """Floating-point operations of one training step's forward and backward pass, per image, as
    torch's FlopCounterMode counts them (matrix multiplies and convolutions; a multiply-add is 2).
    Counted on a copy on the meta device: no memory, no arithmetic, and the model is untouched."""
    counted = copy.deepcopy(model).to("meta").train()
    images = torch.empty(2, 3, image_size, image_size, device="meta")
    with FlopCounterMode(display=False) as counter:
        counted(images).sum().backward()
    return counter.get_total_flops() // len(images)
