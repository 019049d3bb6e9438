import torch

from fast_cifar.model import ResNet9, ResNet18, flops_per_image, format_receptive_fields, receptive_fields


def test_resnet18_size_and_output():
    model = ResNet18()
    assert sum(p.numel() for p in model.parameters()) == 11_173_962  # the usual CIFAR ResNet-18
    convs = [m for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and "shortcut" not in name]
    assert len(convs) == 17  # + the classifier = 18 layers
    assert len([m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]) == 20  # one per conv


def test_small_width_runs_channels_last_forward_and_backward():
    model = ResNet18(num_classes=10, width=8).to(memory_format=torch.channels_last)
    images = torch.randn(4, 3, 32, 32).to(memory_format=torch.channels_last)
    logits = model(images)
    assert logits.shape == (4, 10)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_receptive_fields_match_hand_computation():
    rows = receptive_fields(ResNet18(width=8))
    # 3x3 convs add 2 * jump each; the stride-2 convs double the jump.
    expected = [3, 5, 7, 9, 11, 13, 17, 21, 25, 29, 37, 45, 53, 61, 77, 93, 109]
    assert [r["receptive_field"] for r in rows[:-1]] == expected
    assert [r["output_size"] for r in rows[:-1]] == [32] * 5 + [16] * 4 + [8] * 4 + [4] * 4
    assert [r["jump"] for r in rows[:-1]] == [1] * 5 + [2] * 4 + [4] * 4 + [8] * 4
    assert rows[0]["layer"] == "stem" and rows[5]["layer"] == "stages.1.0.conv1"
    assert rows[-1] == {"layer": "pool", "kernel": 4, "stride": 4, "output_size": 1, "jump": 32,
                        "receptive_field": 133}
    assert "stages.3.1.conv2" in format_receptive_fields(rows)


def test_resnet9_is_the_dawnbench_shape_and_trains_channels_last():
    model = ResNet9()
    # prep 3->64, stage 64->128, residual 2x 128, stage 128->256, stage 256->512, residual 2x 512, linear 512->10
    convs = [(m.in_channels, m.out_channels) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs == [(3, 64), (64, 128), (128, 128), (128, 128), (128, 256), (256, 512), (512, 512), (512, 512)]
    assert sum(p.numel() for p in model.parameters()) == 6_573_120
    assert flops_per_image(model) < 0.7 * flops_per_image(ResNet18())  # the point of the smaller net
    small = ResNet9(width=8).to(memory_format=torch.channels_last)
    logits = small(torch.randn(4, 3, 32, 32).to(memory_format=torch.channels_last))
    assert logits.shape == (4, 10)
    logits.sum().backward()
    assert all(p.grad is not None for p in small.parameters())
    # three 2x2 max-pools take 32x32 to 4x4 before the global pool
    assert [r["output_size"] for r in receptive_fields(small) if "stage" in r["layer"] and r["kernel"] == 2] == [16, 8, 4]
