"""steps.py: the training step, evaluation and the test-time views."""
import torch

from fast_cifar.steps import translated_logits


def test_multicrop_tta_adds_the_four_translated_views():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    pixels = torch.nn.Flatten()  # a "model" whose logits are its input's pixels

    def moved(x, down_right):  # one pixel diagonally, zeros moving in
        y = torch.zeros_like(x)
        if down_right:
            y[..., 1:, 1:] = x[..., :-1, :-1]
        else:
            y[..., :-1, :-1] = x[..., 1:, 1:]
        return y

    expected = sum(moved(view, way).flatten(1) for view in (images, images.flip(3)) for way in (True, False))
    assert torch.equal(translated_logits(pixels, images, torch.float32), expected)
