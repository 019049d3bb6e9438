"""LR range test: sweep the learning rate up exponentially and watch the loss.

The sweep trains a throwaway copy of the model with its own optimizer, so the
real model, its BatchNorm statistics and the optimizer that trains it are
untouched. The loss is smoothed with a bias-corrected moving average. The sweep
ends at the edge of the valley: the first LR at which the smoothed loss rises
`rise` (5% in the recipe) above its minimum, or turns non-finite. The suggested
max LR for the one-cycle schedule is that edge LR divided by `divisor`.

Why the edge and not the minimum: the valley floor is flat, so where in it the
minimum falls is down to noise (on the H100 the minimum moved 2.5x between two
seeds), while the loss rises steeply at the edge, so its LR moves far less
(1.3x); see benchmarks/results/lr_finder. Stopping there also ends the sweep
well before `end_lr`.
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
    min_loss_lr: float  # where the smoothed loss was lowest: reported, not used
    edge_lr: float  # the first LR whose smoothed loss rose `rise` above the minimum (the last LR if none did)
    suggested_lr: float
    stopped_early: bool  # False: the loss never rose enough before end_lr, and edge_lr is end_lr

    def to_dict(self):
        return asdict(self)


def sweep_lrs(start_lr, end_lr, num_iters):
    ratio = end_lr / start_lr
    return [start_lr * ratio ** (i / max(num_iters - 1, 1)) for i in range(num_iters)]


def find_lr(model, batches, loss_of, make_optimizer, *, start_lr=1e-4, end_lr=10.0, num_iters=83,
            smoothing=0.9, rise=0.05, divisor=8.0):
    """Run the range test on a copy of `model` over `batches` (an iterable of (images, labels)).

    `loss_of(model, images, labels)` returns the training loss; `make_optimizer(model)`
    builds the optimizer training will start with (its betas, decay and parameter groups).
    """
    model = copy.deepcopy(model).train()
    optimizer = make_optimizer(model)
    lrs, losses, smoothed = [], [], []
    average, best = 0.0, math.inf
    edge_lr = None
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
        if not math.isfinite(current) or current > (1 + rise) * best:
            edge_lr = lr  # past the valley's edge: this step's loss is not part of the curve
            break
        best = min(best, current)
        lrs.append(lr)
        losses.append(value)
        smoothed.append(current)

    if not lrs:
        raise UserError("the LR finder diverged on its first step: lower lr_finder.start_lr")
    stopped_early = edge_lr is not None
    edge_lr = edge_lr if stopped_early else lrs[-1]
    min_loss_lr = lrs[smoothed.index(min(smoothed))]
    return LRFinderResult(lrs, losses, smoothed, min_loss_lr, edge_lr, edge_lr / divisor, stopped_early)
