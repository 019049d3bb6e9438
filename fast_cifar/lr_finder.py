"""LR range test: sweep the learning rate up exponentially and watch the loss.

The sweep trains a throwaway copy of the model with its own optimizer, so the
real model, its BatchNorm statistics and the optimizer that trains it are
untouched. The loss is smoothed with a bias-corrected moving average. The valley
is where the smoothed loss stays within `rise` (5% in the recipe) of its
minimum: the sweep ends at its far edge, the first LR at which the loss rises
above that (or turns non-finite). The suggested max LR for the one-cycle
schedule is an anchor LR times `multiplier`: in the recipe the minimum / 3, or the
valley's start (the first LR whose smoothed loss came within `rise` of the
minimum); why the minimum: benchmarks/README.md, "The LR finder's rule".
Stopping at the far edge ends the sweep well before `end_lr`.

A sweep is inconclusive when its edge comes within its first `MIN_SWEEP_STEPS` steps (the
smoothed loss of a few steps is noise, not a valley) or when its suggestion falls outside the LRs it
swept: the result says why (`inconclusive`), and train.py then uses training.lr instead.
"""
import copy
import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from fast_cifar.errors import UserError


@dataclass
class LRFinderResult:
    lrs: list
    losses: list  # raw loss at each step
    smoothed_losses: list
    min_loss_lr: float  # where the smoothed loss was lowest: reported, not used
    valley_start_lr: float  # the first LR whose smoothed loss was within `rise` of the minimum
    edge_lr: float  # the first LR whose smoothed loss rose `rise` above the minimum (the last LR if none did)
    suggested_lr: float  # the anchor (valley_start_lr or min_loss_lr) * multiplier
    stopped_early: bool  # False: the loss never rose enough before end_lr, and edge_lr is end_lr
    inconclusive: str = ""  # why the suggestion cannot be trusted, or "" when it can

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, values):
        return cls(**{field.name: values[field.name] for field in fields(cls) if field.name in values})


MIN_SWEEP_STEPS = 5  # fewer steps before the edge: the valley was the first steps' noise


def past_the_valley(smoothed_loss, lowest, rise):
    """Whether a step's smoothed loss has left the valley: risen `rise` above the lowest so far, or diverged."""
    return not math.isfinite(smoothed_loss) or smoothed_loss > (1 + rise) * lowest


def valley_start(lrs, smoothed_losses, rise):
    """The first LR whose smoothed loss came within `rise` of the lowest."""
    lowest = min(smoothed_losses)
    return next(lr for lr, loss in zip(lrs, smoothed_losses) if loss <= (1 + rise) * lowest)


def sweep_lrs(start_lr, end_lr, num_iters):
    ratio = end_lr / start_lr
    return [start_lr * ratio ** (i / max(num_iters - 1, 1)) for i in range(num_iters)]


def find_lr(model, batches, loss_of, make_optimizer, settings):
    """Run the range test on a copy of `model` over `batches` (an iterable of (images, labels)).

    `loss_of(model, images, labels)` returns the training loss; `make_optimizer(model)`
    builds the optimizer training will start with (its betas, decay and parameter groups).
    `settings` is config.py's lr_finder section: start_lr, end_lr, num_iters, smoothing,
    rise, anchor, multiplier.
    """
    start_lr, end_lr, num_iters = settings.start_lr, settings.end_lr, settings.num_iters
    smoothing, rise = settings.smoothing, settings.rise
    model = copy.deepcopy(model).train()
    optimizer = make_optimizer(model)
    lrs, losses, smoothed = [], [], []
    average, best = 0.0, math.inf
    edge_lr = None
    for step, (lr, (images, labels)) in enumerate(zip(sweep_lrs(start_lr, end_lr, num_iters), batches)):
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        loss = loss_of(model, images, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

        value = loss.item()  # one sync per step is fine here: the sweep needs the value to decide
        average = smoothing * average + (1 - smoothing) * value
        current = average / (1 - smoothing ** (step + 1))
        if past_the_valley(current, best, rise):
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
    valley_start_lr = valley_start(lrs, smoothed, rise)
    anchor_lr = valley_start_lr if settings.anchor == "valley_start" else min_loss_lr
    suggested_lr = anchor_lr * settings.multiplier
    inconclusive = ""
    if stopped_early and len(lrs) < MIN_SWEEP_STEPS:
        inconclusive = f"the loss rose {100 * rise:g}% above its minimum after {len(lrs)} steps, within the noise"
    elif not start_lr <= suggested_lr <= edge_lr:
        inconclusive = f"it suggests {suggested_lr:.2e}, outside the LRs it swept ({start_lr:.2e} to {edge_lr:.2e})"
    return LRFinderResult(lrs, losses, smoothed, min_loss_lr, valley_start_lr, edge_lr, suggested_lr, stopped_early,
                          inconclusive)


# --- a sweep once per (settings, data, seed) ------------------------------------------------------------


def sweep_cache_key(sweep_inputs):
    """A name for everything that shapes a sweep: the same inputs give the same sweep, so it can be reused."""
    return hashlib.sha256(json.dumps(sweep_inputs, sort_keys=True).encode()).hexdigest()[:24]


def cached_sweep(folder, key):
    """The sweep an earlier run stored under `key` in `folder`, or None. A file that is not such a sweep is
    ignored (and replaced by the next sweep): it is only a cache."""
    try:
        stored = json.loads((Path(folder) / f"{key}.json").read_text())
        return LRFinderResult.from_dict(stored["sweep"]) if stored.get("key") == key else None
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
