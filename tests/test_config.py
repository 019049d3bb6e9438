import pytest

from fast_cifar.config import as_dict, declare_train_sections, parse_config
from fast_cifar.errors import UserError

from helpers import REPO


def parse(*argv):
    return parse_config(declare_train_sections, [str(arg) for arg in argv])


# What makes 24ep.yaml the recipe, chosen by benchmarks/tuning.py: the values it must hold, and the
# ones among them that a config file has to set because the defaults differ.
RECIPE = {("training", "epochs"): 24, ("training", "batch_size"): 512, ("model", "width"): 64,
          ("data", "train_subset"): 0, ("training", "optimizer"): "adamw", ("training", "weight_decay"): 0.2,
          ("training", "decay_norm_and_bias"): False, ("training", "label_smoothing"): 0.1,
          ("training", "compile"): True, ("training", "compile_mode"): "reduce-overhead",
          ("training", "precision"): "auto", ("training", "eval_flip_tta"): True, ("lr_finder", "enabled"): True,
          ("lr_finder", "divisor"): 3.0}
SET_BY_THE_RECIPE = {("training", "optimizer"), ("training", "weight_decay"), ("training", "decay_norm_and_bias"),
                     ("training", "compile_mode"), ("training", "eval_flip_tta"), ("lr_finder", "divisor")}


def test_24ep_recipe():
    cfg, defaults = parse("--config", REPO / "rn18_configs" / "24ep.yaml"), parse()
    assert {key: getattr(getattr(cfg, key[0]), key[1]) for key in RECIPE} == RECIPE
    differs = {key for key in RECIPE if getattr(getattr(cfg, key[0]), key[1]) != getattr(getattr(defaults, key[0]),
                                                                                          key[1])}
    assert differs == SET_BY_THE_RECIPE
    # It differs from the small CPU configuration where that one is cut down.
    small = parse("--config", REPO / "rn18_configs" / "cpu_small.yaml")
    assert small.model.width < 64 and small.data.train_subset > 0 and not small.training.compile


def test_sgd_reference_is_the_classic_schedule():
    cfg = parse("--config", REPO / "rn18_configs" / "24ep_sgd_reference.yaml")
    training = cfg.training
    assert (training.optimizer, training.nesterov, training.weight_decay) == ("sgd", True, 5e-4)
    assert (training.epochs, training.batch_size) == (24, 512) and not cfg.lr_finder.enabled


def test_every_config_file_parses():
    for path in (REPO / "rn18_configs").glob("*.yaml"):
        parse("--config", path)


def test_command_line_overrides_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  epochs: 7\n  compile: true\n")
    cfg = parse("--config", path, "--training.epochs", "2", "--training.compile", "false")
    assert cfg.training.epochs == 2 and cfg.training.compile is False
    # Giving the default value explicitly still overrides the file.
    assert parse("--config", path, "--training.epochs", "24").training.epochs == 24
    assert parse("-C", path).training.epochs == 7


def test_lists_and_defaults():
    cfg = parse("--output.accuracy_targets", "0.5,0.75")
    assert cfg.output.accuracy_targets == [0.5, 0.75]
    assert as_dict(cfg)["data"]["path"] == "data/cifar10"


@pytest.mark.parametrize("argv, message", [
    (["--training.epochs", "0"], "training.epochs"),
    (["--training.batch_size", "-4"], "training.batch_size"),
    (["--training.epochs", "many"], "training.epochs"),
    (["--training.compile", "maybe"], "training.compile"),
    (["--training.precision", "fp16"], "training.precision"),
    (["--training.epoch", "3"], "unrecognized arguments"),
    (["--config", "no/such/file.yaml"], "not found"),
    (["--training.lr", "nan"], "training.lr"),
    (["--training.lr", "inf"], "training.lr"),
    (["--training.lr", "0"], "training.lr"),
    (["--training.lr", "-1e-3"], "training.lr"),
    (["--lr_finder.start_lr", "nan"], "lr_finder.start_lr"),
    (["--training.weight_decay", "nan"], "training.weight_decay"),
    (["--training.epochs", "1.7"], "training.epochs"),
    (["--training.seed", "0.9"], "training.seed"),
    (["--output.accuracy_targets", "0.9,nan"], "output.accuracy_targets"),
])
def test_bad_values_are_one_line_errors(argv, message):
    with pytest.raises(UserError, match=message) as error:
        parse(*argv)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("text, message", [
    ("training:\n  epoch: 3\n", "unknown config key 'training.epoch'.*did you mean 'training.epochs'"),
    ("training:\n  epochs: 0\n", "training.epochs"),
    ("training: [1, 2\n", "not valid YAML"),
    ("- 1\n- 2\n", "sections"),
    ("training:\n  epochs: 1.7\n", "training.epochs: got 1.7, expected an integer >= 1"),
    ("training:\n  epochs: true\n", "training.epochs: got True, expected an integer >= 1"),
    ("training:\n  seed: 0.9\n", "training.seed: got 0.9, expected an integer >= 0"),
    ("training:\n  lr: .nan\n", "training.lr: got nan, expected a finite number > 0"),
    ("training:\n  lr: 0\n", "training.lr"),
])
def test_bad_files_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        parse("--config", path)


def test_numbers_from_yaml_and_flags_keep_their_meaning(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  lr: 1e-3\n  epochs: 3\n")  # YAML reads 1e-3 (no dot) as a string
    cfg = parse("--config", path, "--training.seed", "7")
    assert cfg.training.lr == 1e-3 and cfg.training.epochs == 3 and cfg.training.seed == 7
