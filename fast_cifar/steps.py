"""The training step, evaluation and the test-time views: what train.py's loop and the benchmarks share."""
import torch
import torch.nn.functional as F

from fast_cifar.data import SampleCheck
from fast_cifar.distributed import World, mean_over_ranks
from fast_cifar.errors import UserError


def forward(model, images, dtype):
    # bf16 autocast: convs and matmuls in bf16, BatchNorm and the loss in fp32.
    with torch.autocast(images.device.type, dtype=dtype, enabled=dtype != torch.float32):
        return model(images).float()


def training_loss(model, images, labels, dtype, label_smoothing=0.0):
    """The label-smoothed cross-entropy that training minimizes, and the logits."""
    logits = forward(model, images, dtype)
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing), logits


def train_step(model, optimizer, images, labels, dtype, label_smoothing=0.0):
    """Forward, loss, backward, optimizer step; returns the loss and logits."""
    loss, logits = training_loss(model, images, labels, dtype, label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), logits.detach()


@torch.no_grad()
def evaluate(model, loader, dtype, label_smoothing, tta=(), world=World()):
    """Test loss and accuracy, how many test samples `SampleCheck` found to be the split, each once, and the
    accuracy under each test-time augmentation named in `tta`: "flip" (the image and its mirror) and
    "multicrop" (those two, each also moved one pixel up-left and one down-right: six views, their logits
    summed, which ranks the classes as their mean does; after airbench's level 2)."""
    model.eval()
    check = SampleCheck(loader)
    loss_sum = correct = 0
    correct_tta = dict.fromkeys(tta, 0)
    for images, labels in loader:
        check.add(labels)
        logits = forward(model, images, dtype)
        loss_sum += F.cross_entropy(logits, labels, label_smoothing=label_smoothing, reduction="sum")
        correct += (logits.argmax(1) == labels).sum()
        if tta:
            mirrored = logits + forward(model, same_layout(images.flip(3), images), dtype)
            for name in tta:
                views = mirrored if name == "flip" else mirrored + translated_logits(model, images, dtype)
                correct_tta[name] += (views.argmax(1) == labels).sum()
    checked = check.verify("test")
    sums = [loss_sum, correct, *(torch.as_tensor(value, device=correct.device) for value in correct_tta.values())]
    loss, accuracy, *accuracies = mean_over_ranks(sums, checked, world)
    return {"test_loss": loss, "test_accuracy": accuracy, "test_samples_checked": checked,
            **{f"test_accuracy_{name}_tta": value for name, value in zip(tta, accuracies)}}


def translated_logits(model, images, dtype):
    """The summed logits of the image and its mirror, each moved one pixel up-left and one down-right; the
    pixels moved in are zeros, the mean colour once normalized, as the training crop fills them."""
    logits = 0
    for view in (images, images.flip(3)):
        padded = F.pad(view, (1, 1, 1, 1))
        for moved in (padded[..., :-2, :-2], padded[..., 2:, 2:]):
            logits = logits + forward(model, same_layout(moved, images), dtype)
    return logits


def same_layout(view, images):
    """`view` in `images`'s memory layout, so a compiled evaluator sees the strides it was compiled for."""
    channels_last = images.is_contiguous(memory_format=torch.channels_last)
    return view.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def endless(loader):
    """Batches from epoch after epoch; closing this generator stops the epoch in progress."""
    if len(loader) == 0:  # else it would pass over empty epochs forever
        raise UserError(f"the loader holds no full batch of {loader.batch_size} images: use a smaller batch")
    while True:
        yield from loader
