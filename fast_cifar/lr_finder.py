"""LR range test: sweep the learning rate up exponentially and watch the loss.

The sweep trains a throwaway copy of the model with its own optimizer, so the
real model, its BatchNorm statistics and the optimizer that trains it are
untouched. The loss is smoothed with a bias-corrected moving average.

The rule: the suggested max LR is `multiplier` times the anchor, the LR at
which the smoothed loss, on its way down, first comes within `anchor_rise` of
its minimum (interpolated between the two steps around it). The anchor sits on
the steep part of the descent, where a seed's noise moves it least. The
minimum itself does not: with AdamW and BatchNorm the loss often stalls on a
floor two or three decades wide instead of rising, and noise puts the minimum
anywhere along it (minimum / 3 moved 6.2x over 10 seeds of cpu_small). Evidence:
benchmarks/README.md, "The LR finder's rule".

The valley is where the smoothed loss stays within `rise` of its minimum. The
sweep stops at the valley's far edge, where the loss rises past that (or turns
non-finite). A valley `flat_decades` wide or more is reported as flat: the
rule does not depend on where its minimum falls, but a user reading the plot
should know that its floor, not a dip, is what the sweep found.

A sweep is inconclusive when its edge comes within its first `MIN_SWEEP_STEPS` steps (the
smoothed loss of a few steps is noise, not a valley), when its first step was already near the minimum
(no descent to anchor on), or when its suggestion falls outside the LRs it swept: the result says why
(`inconclusive`), and train.py then uses training.lr instead.
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
    anchor_lr: float  # where the falling smoothed loss first came within `anchor_rise` of its minimum
    valley_start_lr: float  # the first LR whose smoothed loss was within `rise` of the minimum
    edge_lr: float  # the valley's far edge: the first LR whose smoothed loss rose past it (the last LR if none did)
    suggested_lr: float  # anchor_lr * multiplier
    stop: str  # "edge": the loss rose past the valley; "end_lr": it never did
    valley_decades: float  # log10(edge_lr / valley_start_lr)
    flat: bool  # the valley spans flat_decades or more
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


def descent_anchor(lrs, smoothed_losses, anchor_rise):
    """The LR at which the smoothed loss first falls to `anchor_rise` above its minimum, interpolated in log LR
    between the step above that level and the step at or below it (the first LR if the first step is)."""
    level = (1 + anchor_rise) * min(smoothed_losses)
    below = next(i for i, loss in enumerate(smoothed_losses) if loss <= level)
    if below == 0:
        return lrs[0]
    above, at = smoothed_losses[below - 1], smoothed_losses[below]
    fraction = (above - level) / (above - at)
    return math.exp(math.log(lrs[below - 1]) + fraction * (math.log(lrs[below]) - math.log(lrs[below - 1])))


def sweep_lrs(start_lr, end_lr, num_iters):
    ratio = end_lr / start_lr
    return [start_lr * ratio ** (i / max(num_iters - 1, 1)) for i in range(num_iters)]


def find_lr(model, batches, loss_of, make_optimizer, settings):
    """Run the range test on a copy of `model` over `batches` (an iterable of (images, labels)).

    `loss_of(model, images, labels)` returns the training loss; `make_optimizer(model)`
    builds the optimizer training will start with (its betas, decay and parameter groups).
    `settings` is config.py's lr_finder section: start_lr, end_lr, num_iters, smoothing,
    rise, flat_decades, anchor_rise, multiplier.
    """
    model = copy.deepcopy(model).train()
    optimizer = make_optimizer(model)
    curve = SweepCurve(settings)
    for lr, (images, labels) in zip(sweep_lrs(settings.start_lr, settings.end_lr, settings.num_iters), batches):
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        loss = loss_of(model, images, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if curve.add(lr, loss.item()):  # one sync per step is fine here: the sweep needs the value to decide
            break
    return curve.result()


class SweepCurve:
    """A sweep's record, step by step: the LR and loss, the smoothed loss, and where to stop. Recorded sweeps
    are replayed through it (benchmarks/lr_rules.py) to see what this rule would have picked from them."""

    def __init__(self, settings):
        self.settings = settings
        self.lrs, self.losses, self.smoothed = [], [], []
        self.average, self.lowest = 0.0, math.inf
        self.stop, self.edge_lr = "end_lr", None

    def add(self, lr, loss):
        """Record one step; returns "edge" when the loss has left the valley (the sweep stops), else ""."""
        smoothing = self.settings.smoothing
        self.average = smoothing * self.average + (1 - smoothing) * loss
        smoothed = self.average / (1 - smoothing ** (len(self.lrs) + 1))
        if past_the_valley(smoothed, self.lowest, self.settings.rise):
            self.stop, self.edge_lr = "edge", lr  # past the valley's edge: this step is not part of the curve
            return self.stop
        self.lowest = min(self.lowest, smoothed)
        self.lrs.append(lr)
        self.losses.append(loss)
        self.smoothed.append(smoothed)
        return ""

    def result(self):
        """The suggestion and the valley, by the rule in this module's docstring."""
        if not self.lrs:
            raise UserError("the LR finder diverged on its first step: lower lr_finder.start_lr")
        settings, lrs, smoothed = self.settings, self.lrs, self.smoothed
        edge_lr = self.edge_lr or lrs[-1]
        start_lr = valley_start(lrs, smoothed, settings.rise)
        anchor_lr = descent_anchor(lrs, smoothed, settings.anchor_rise)
        suggested_lr = anchor_lr * settings.multiplier
        decades = math.log10(edge_lr / start_lr)
        inconclusive = ""
        if self.stop == "edge" and len(lrs) < MIN_SWEEP_STEPS:
            inconclusive = (f"the loss rose {100 * settings.rise:g}% above its minimum after {len(lrs)} steps, "
                            f"within the noise")
        elif smoothed[0] <= (1 + settings.anchor_rise) * min(smoothed):
            inconclusive = (f"its first step was already within {100 * settings.anchor_rise:g}% of the minimum: no "
                            f"descent to anchor on (start it below {lrs[0]:.2e})")
        elif not lrs[0] <= suggested_lr <= edge_lr:
            inconclusive = f"it suggests {suggested_lr:.2e}, outside the LRs it swept ({lrs[0]:.2e} to {edge_lr:.2e})"
        return LRFinderResult(lrs, self.losses, smoothed, lrs[smoothed.index(min(smoothed))], anchor_lr, start_lr,
                              edge_lr, suggested_lr, self.stop, decades, decades >= settings.flat_decades,
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
