"""The optimizer and its one-cycle schedule, with every setting the recipe depends on explicit.

OneCycleLR warms the LR up from max_lr / div_factor to max_lr over the first
pct_start of the steps, then anneals it to max_lr / (div_factor * final_div_factor).
With `cycle_momentum` it moves Adam's beta1 (SGD's momentum) the other way, from
max_momentum down to base_momentum at the peak LR and back: so training starts
at beta1 = max_momentum, and the LR finder sweeps with that same optimizer.
"""
import copy

import torch
from torch import nn

from fast_cifar.errors import UserError

NORMALIZATION_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)


def parameter_groups(model, training):
    """The parameters in groups by their decay and LR: normalization weights and biases apart from the rest
    (no decay unless `decay_norm_and_bias`, their LR scaled by `norm_lr_multiplier`), other biases without
    decay unless `decay_norm_and_bias`. Each group's `lr_scale` multiplies every LR the schedule sets."""
    norm = {id(p) for module in model.modules() if isinstance(module, NORMALIZATION_LAYERS)
            for p in module.parameters(recurse=False)}
    bias = {id(p) for name, p in model.named_parameters() if name.endswith("bias")} - norm
    decay = training.weight_decay
    norm_and_bias_decay = decay if training.decay_norm_and_bias else 0.0
    params, norm_or_bias = list(model.parameters()), norm | bias
    groups = [{"params": [p for p in params if id(p) not in norm_or_bias], "weight_decay": decay, "lr_scale": 1.0},
              {"params": [p for p in params if id(p) in bias], "weight_decay": norm_and_bias_decay, "lr_scale": 1.0},
              {"params": [p for p in params if id(p) in norm], "weight_decay": norm_and_bias_decay,
               "lr_scale": training.norm_lr_multiplier}]
    return [group for group in groups if group["params"]]


def make_optimizer(training, model, lr, fused=False):
    """Adam (L2 decay), AdamW (decoupled decay) or SGD, as the one-cycle schedule will start it; `fused`
    (CUDA only): one kernel updates every parameter."""
    groups = [{**group, "lr": lr * group["lr_scale"]} for group in parameter_groups(model, training)]
    if training.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=training.max_momentum, nesterov=training.nesterov,
                               fused=fused)
    adam = torch.optim.AdamW if training.optimizer == "adamw" else torch.optim.Adam
    return adam(groups, lr=lr, betas=(training.max_momentum, training.beta2), fused=fused)


def make_scheduler(training, optimizer, max_lr, steps_per_epoch):
    """The one-cycle schedule; `max_lr` is the peak of the main group, each group's `lr_scale` times it."""
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, [max_lr * group["lr_scale"] for group in optimizer.param_groups], epochs=training.epochs,
        steps_per_epoch=steps_per_epoch, pct_start=training.pct_start, anneal_strategy=training.anneal_strategy,
        div_factor=training.div_factor, final_div_factor=training.final_div_factor,
        cycle_momentum=training.cycle_momentum, base_momentum=training.base_momentum,
        max_momentum=training.max_momentum)


def check_schedule(training, steps_per_epoch):
    """OneCycleLR divides by each phase's length: both must be at least a step."""
    total = training.epochs * steps_per_epoch
    warm_up = training.pct_start * total
    if warm_up < 2 or total - warm_up < 2:
        raise UserError(f"the run is too short for its one-cycle schedule: {total} steps in all, "
                        f"{warm_up:g} of them warming up (training.pct_start {training.pct_start}); "
                        f"each phase needs 2 or more: train longer, on more images or with a smaller batch")


class WeightAverage:
    """An exponential moving average of a model's weights and BatchNorm statistics, kept in `module`, a copy
    of the model that is evaluated and saved in its place. Each `update(decay)` moves every average a
    fraction 1 - decay towards the model's value (decay 0: a copy), in a few foreach kernels, with no
    host synchronization. Integer buffers (BatchNorm's batch counts) are copied."""

    def __init__(self, model):
        self.module = copy.deepcopy(model)
        pairs = list(zip([*self.module.parameters(), *self.module.buffers()], [*model.parameters(), *model.buffers()]))
        self.floats = [list(pair) for pair in zip(*(p for p in pairs if p[0].is_floating_point()))]
        self.counts = [list(pair) for pair in zip(*(p for p in pairs if not p[0].is_floating_point()))]

    @torch.no_grad()
    def update(self, decay):
        averages, values = self.floats
        torch._foreach_lerp_(averages, values, 1.0 - decay)
        if self.counts:
            torch._foreach_copy_(*self.counts)
