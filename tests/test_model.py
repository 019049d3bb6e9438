import torch

from fast_cifar.model import ResNet18, format_receptive_fields, receptive_fields


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
