import pytest
import torch

from fast_cifar import train
from fast_cifar.config import declare_train_sections, parse_config
from fast_cifar.model import ResNet18
from fast_cifar.optim import WeightAverage, make_optimizer, make_scheduler, parameter_groups

from helpers import REPO, error_lines, one_epoch

CPU = torch.device("cpu")
RECIPE = REPO / "rn18_configs" / "24ep.yaml"


def training(*argv):
    return parse_config(declare_train_sections, ["--config", str(RECIPE), *map(str, argv)]).training


def test_no_decay_on_batchnorm_and_biases():
    model = ResNet18(width=8)
    decayed, biases, norms = parameter_groups(model, training("--training.weight_decay", 5e-4))
    assert decayed["weight_decay"] == 5e-4 and biases["weight_decay"] == norms["weight_decay"] == 0.0
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    norm_params = [p for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()]
    assert {id(p) for p in decayed["params"]} == {id(p) for p in convs} | {id(model.classifier.weight)}
    assert {id(p) for p in biases["params"]} == {id(model.classifier.bias)}
    assert {id(p) for p in norms["params"]} == {id(p) for p in norm_params}
    every = parameter_groups(model, training("--training.decay_norm_and_bias", "true"))
    assert {group["weight_decay"] for group in every} == {training().weight_decay}


def test_batchnorm_follows_its_own_multiple_of_the_schedule():
    cfg = training("--training.norm_lr_multiplier", 8, "--training.epochs", 1)
    optimizer = make_optimizer(cfg, ResNet18(width=8), lr=0.5)
    scheduler = make_scheduler(cfg, optimizer, max_lr=0.5, steps_per_epoch=10)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
        main, _, norms = optimizer.param_groups
        assert norms["lr"] == pytest.approx(8 * main["lr"])


@pytest.mark.parametrize("name, kind", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                        ("sgd", torch.optim.SGD)])
def test_schedule_follows_the_config(name, kind):
    cfg = training("--training.optimizer", name, "--training.div_factor", 10, "--training.final_div_factor", 100,
                   "--training.base_momentum", 0.8, "--training.max_momentum", 0.9, "--training.epochs", 2)
    model = ResNet18(width=8)
    optimizer = make_optimizer(cfg, model, lr=0.5)
    assert type(optimizer) is kind
    momentum = (lambda g: g["betas"][0]) if name != "sgd" else (lambda g: g["momentum"])
    # The finder sweeps with this optimizer, so it must already be what the schedule starts training with.
    before = momentum(optimizer.param_groups[0])
    scheduler = make_scheduler(cfg, optimizer, max_lr=0.5, steps_per_epoch=10)
    group = optimizer.param_groups[0]
    assert momentum(group) == before == 0.9
    assert group["lr"] == pytest.approx(0.5 / 10)
    lrs, momenta = [], []
    for _ in range(20):  # the LR and momentum each of the 20 steps uses
        lrs.append(group["lr"])
        momenta.append(momentum(group))
        optimizer.step()
        scheduler.step()
    assert max(lrs) == pytest.approx(0.5, rel=1e-3) and min(momenta) == pytest.approx(0.8, rel=1e-3)
    assert lrs[-1] == pytest.approx(0.5 / 10 / 100)


def test_momentum_stays_fixed_without_cycling():
    cfg = training("--training.cycle_momentum", "false", "--training.max_momentum", 0.9, "--training.epochs", 1)
    optimizer = make_optimizer(cfg, ResNet18(width=8), lr=0.1)
    scheduler = make_scheduler(cfg, optimizer, max_lr=0.1, steps_per_epoch=10)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["betas"][0] == 0.9


def test_the_weight_average_moves_towards_the_model_without_touching_it():
    model = ResNet18(width=4)
    average = WeightAverage(model)
    start = {key: value.clone() for key, value in model.state_dict().items()}
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.add_(1)  # weights, BatchNorm statistics and batch counts alike
    average.update(0.75)
    for key, value in average.module.state_dict().items():
        expected = start[key] + 1 if not value.is_floating_point() else start[key] + 0.25  # counts are copied
        assert torch.allclose(value, expected), key
    assert all(torch.equal(value, start[key] + 1) for key, value in model.state_dict().items())
    average.update(0.0)  # before training.ema_start_epoch: a copy
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in average.module.state_dict().items())


@pytest.mark.slow
def test_a_schedule_shorter_than_its_warm_up_is_one_line(synthetic_folder, tmp_path, capsys):
    args = one_epoch(synthetic_folder, tmp_path, "short") + ["--data.train_subset", "256"]  # 4 steps in all
    with pytest.raises(SystemExit):
        train.main(args)
    assert "too short for its one-cycle schedule: 4 steps in all" in error_lines(capsys.readouterr().err)[-1]
    assert not (tmp_path / "short").exists()
