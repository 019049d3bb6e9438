"""LR range test: sweep the learning rate up exponentially and watch the loss.

The sweep trains a throwaway copy of the model with its own optimizer, so the
real model, its BatchNorm statistics and the optimizer that trains it are
untouched. The loss is smoothed with a bias-corrected moving average; the sweep
ends early once that smoothed loss exceeds `divergence` times its minimum (or
turns non-finite), since past that point it measures only an explosion. The
suggested max LR for the one-cycle schedule is the LR at the smoothed loss's
minimum divided by `divisor`: comfortably before the loss turns up.
"""
import copy
import math
from dataclasses import asdict, dataclass

from fast_cifar.errors import UserError


@dataclass
class LRFinderResult:
    lrs: list
    losses: list  # raw loss at each step
    smoothed_losses: list
    min_loss_lr: float
    suggested_lr: float
    stopped_early: bool

    def to_dict(self):
        return asdict(self)


def sweep_lrs(start_lr, end_lr, num_iters):
    ratio = end_lr / start_lr
    return [start_lr * ratio ** (i / max(num_iters - 1, 1)) for i in range(num_iters)]


def find_lr(model, batches, loss_of, make_optimizer, *, start_lr=1e-6, end_lr=1.0, num_iters=100,
            smoothing=0.9, divergence=4.0, divisor=10.0):
    """Run the range test on a copy of `model` over `batches` (an iterable of (images, labels)).

    `loss_of(model, images, labels)` returns the training loss; `make_optimizer(model)`
    builds the optimizer training will start with (its betas, decay and parameter groups).
    """
    model = copy.deepcopy(model).train()
    optimizer = make_optimizer(model)
    lrs, losses, smoothed = [], [], []
    average, best = 0.0, math.inf
    stopped_early = False
    for step, (lr, (images, labels)) in enumerate(zip(sweep_lrs(start_lr, end_lr, num_iters), batches)):
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = loss_of(model, images, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

        value = loss.item()  # one sync per step is fine here: the sweep needs the value to decide
        average = smoothing * average + (1 - smoothing) * value
        current = average / (1 - smoothing ** (step + 1))
        if not math.isfinite(current) or current > divergence * best:
            stopped_early = True  # diverged: this step is not part of the result
            break
        best = min(best, current)
        lrs.append(lr)
        losses.append(value)
        smoothed.append(current)

    if not lrs:
        raise UserError("the LR finder diverged on its first step: lower lr_finder.start_lr")
    min_loss_lr = lrs[smoothed.index(min(smoothed))]
    return LRFinderResult(lrs, losses, smoothed, min_loss_lr, min_loss_lr / divisor, stopped_early)
