import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from fast_cifar.config import declare_train_sections, parse_config
from fast_cifar.errors import UserError
from fast_cifar.lr_finder import cached_sweep, find_lr, sweep_cache_key, sweep_lrs

RECIPE = parse_config(declare_train_sections, []).lr_finder


def settings(**changes):
    """The recipe's lr_finder settings with `changes`."""
    return SimpleNamespace(**{**vars(RECIPE), **changes})


def problem(seed=0):
    """A small linearly separable classification task and a model for it."""
    generator = torch.Generator().manual_seed(seed)
    weights = torch.randn(20, 4, generator=generator)
    batches = []
    for _ in range(200):
        x = torch.randn(64, 20, generator=generator)
        batches.append((x, (x @ weights).argmax(1)))
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 4))
    return model, batches


def loss_of(model, x, y):
    return F.cross_entropy(model(x), y)


def adam(model):
    return torch.optim.Adam(model.parameters())


def test_sweep_is_exponential():
    lrs = sweep_lrs(1e-4, 1.0, 5)
    assert lrs == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1.0])


def test_suggests_from_the_valleys_start_and_leaves_the_model_alone():
    model, batches = problem()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sweep = settings(start_lr=1e-5, end_lr=10.0, num_iters=100, rise=0.05, anchor="valley_start", multiplier=5)
    result = find_lr(model, batches, loss_of, adam, sweep)
    # the loss fell along the sweep, then rose 5% above its minimum: the sweep ended there
    assert min(result.smoothed_losses) < 0.8 * result.smoothed_losses[0]
    assert result.stopped_early and len(result.lrs) < 100
    assert max(result.smoothed_losses[result.smoothed_losses.index(min(result.smoothed_losses)):]) \
        <= 1.05 * min(result.smoothed_losses)
    assert result.valley_start_lr <= result.min_loss_lr < result.edge_lr
    assert result.suggested_lr == pytest.approx(result.valley_start_lr * 5)
    start = result.lrs.index(result.valley_start_lr)  # the first step within 5% of the minimum
    assert result.smoothed_losses[start] <= 1.05 * min(result.smoothed_losses) < result.smoothed_losses[start - 1]
    assert 1e-4 < result.suggested_lr < 1.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN stats too
    assert model.training  # mode untouched


def test_the_minimum_can_anchor_the_suggestion():
    model, batches = problem()
    sweep = settings(start_lr=1e-5, end_lr=10.0, num_iters=100, anchor="minimum", multiplier=1 / 3)
    result = find_lr(model, batches, loss_of, adam, sweep)
    assert result.suggested_lr == pytest.approx(result.min_loss_lr / 3)


def test_a_sweep_that_never_rises_says_so():
    model, batches = problem()
    result = find_lr(model, batches, loss_of, adam, settings(start_lr=1e-6, end_lr=1e-4, num_iters=30))
    assert not result.stopped_early and len(result.lrs) == 30
    assert result.edge_lr == pytest.approx(1e-4)


def test_a_larger_rise_lets_the_sweep_go_further():
    model, batches = problem()
    edges = [find_lr(model, batches, loss_of, adam, settings(start_lr=1e-5, end_lr=10.0, num_iters=100,
                                                             rise=rise)).edge_lr for rise in (0.02, 1.0)]
    assert edges[0] < edges[1]


def test_divergence_on_first_step_is_an_error():
    model, batches = problem()
    bad_loss = lambda model, x, y: loss_of(model, x, y) * float("nan")  # noqa: E731
    with pytest.raises(UserError, match="start_lr"):
        find_lr(model, batches, bad_loss, adam, settings(num_iters=10))


def test_a_sweep_over_flat_noise_is_inconclusive():
    # A loss that does not depend on the LR, only noisy: an "edge" from the first steps' noise, or a
    # minimum anywhere, so that the minimum / 3 can fall below the sweep; either way, not a valley.
    model, batches = problem()
    noise = iter(torch.rand(1000, generator=torch.Generator().manual_seed(0)).tolist())
    flat = lambda model, x, y: loss_of(model, x, y) * 0 + 2.3 + 0.3 * next(noise)  # noqa: E731
    result = find_lr(model, batches, flat, adam, settings(start_lr=1e-4, end_lr=10.0, num_iters=1000))
    assert result.inconclusive


def test_a_suggestion_below_the_sweep_is_inconclusive():
    model, batches = problem()
    rising = lambda model, x, y: loss_of(model, x, y) * 0 + 1.0 + 0.01 * rising.step  # noqa: E731
    rising.step = 0

    def loss(model, x, y):
        rising.step += 1
        return rising(model, x, y)

    result = find_lr(model, batches, loss, adam, settings(start_lr=1e-4, end_lr=1.0, num_iters=50, rise=0.2))
    assert result.stopped_early and len(result.lrs) >= 5  # the loss rose steadily from its first step
    assert result.min_loss_lr == 1e-4 and result.inconclusive.startswith("it suggests 3.33e-05, outside the LRs it swept")


def test_a_clean_sweep_is_conclusive():
    model, batches = problem()
    result = find_lr(model, batches, loss_of, adam, settings(start_lr=1e-5, end_lr=10.0, num_iters=100))
    assert result.inconclusive == ""


def test_an_edge_within_the_first_steps_is_inconclusive():
    model, batches = problem()
    losses = iter([2.0, 3.0] + [2.0] * 100)
    jump = lambda model, x, y: loss_of(model, x, y) * 0 + next(losses)  # noqa: E731
    result = find_lr(model, batches, jump, adam, settings(start_lr=1e-4, end_lr=10.0, num_iters=100))
    assert result.stopped_early and len(result.lrs) == 1
    assert result.inconclusive == "the loss rose 5% above its minimum after 1 steps, within the noise"


def test_a_cached_sweep_is_read_back_whole_and_anything_else_is_a_miss(tmp_path):
    model, batches = problem()
    sweep = find_lr(model, batches, loss_of, adam, settings(start_lr=1e-5, end_lr=10.0, num_iters=100))
    (tmp_path / "k.json").write_text(json.dumps({"key": "k", "sweep": sweep.to_dict()}))
    assert cached_sweep(tmp_path, "k") == sweep
    assert cached_sweep(tmp_path, "missing") is None
    for damaged in ('{"key": "k"}', '{"key": "other", "sweep": {}}', "not json", '["k"]', '{"key": "k", "sweep": 3}'):
        (tmp_path / "k.json").write_text(damaged)
        assert cached_sweep(tmp_path, "k") is None, damaged
    assert sweep_cache_key({"a": 1, "b": 2}) == sweep_cache_key({"b": 2, "a": 1}) != sweep_cache_key({"a": 2, "b": 2})
