import pytest
import yaml

from fastargs import Config

from fast_cifar.config import KINDS, Setting, as_dict, check_train_settings, declare_train_sections, parse_config
from fast_cifar.errors import UserError

from helpers import REPO


def parse(*argv):
    return parse_config(declare_train_sections, [str(arg) for arg in argv])


def flat(cfg):
    return {f"{section}.{key}": value for section, values in as_dict(cfg).items() for key, value in values.items()}


# Each config in rn18_configs/ and what it may change from the recipe, which is the defaults.
MAY_CHANGE = {
    "24ep.yaml": set(),
    **{f"{epochs}ep.yaml": {"training.epochs"} for epochs in (8, 12, 16, 32, 40)},
    "cpu_small.yaml": {"model.width", "data.loader", "data.train_subset", "data.early_test_subset", "training.epochs",
                       "training.batch_size",
                       "training.test_batch_size",
                       "training.precision", "training.compile", "training.device"},
    "24ep_sgd_reference.yaml": {"training.optimizer", "training.nesterov", "training.lr", "training.weight_decay",
                                "training.decay_norm_and_bias", "training.anneal_strategy",
                                "training.cycle_momentum", "training.max_momentum", "training.label_smoothing",
                                "lr_finder.enabled"},
    "26ep_resnet18_reference.yaml": {"augment.cutout", "training.epochs", "training.batch_size",
                                     "training.optimizer", "training.nesterov", "training.lr",
                                     "training.weight_decay", "training.decay_norm_and_bias", "training.pct_start",
                                     "training.div_factor", "training.anneal_strategy", "training.cycle_momentum",
                                     "training.max_momentum", "training.label_smoothing",
                                     "training.eval_multicrop_tta", "lr_finder.enabled"},
}


@pytest.mark.parametrize("path", sorted((REPO / "rn18_configs").glob("*.yaml")), ids=lambda path: path.name)
def test_configs_differ_from_the_recipe_only_where_they_mean_to(path):
    assert path.name in MAY_CHANGE, f"{path.name}: add it to MAY_CHANGE with the settings it may change"
    recipe, config = flat(parse()), flat(parse("--config", path))
    differs = {key for key in recipe if config[key] != recipe[key]}
    assert differs <= MAY_CHANGE[path.name], f"{path.name} changes {sorted(differs - MAY_CHANGE[path.name])}"
    content = yaml.safe_load(path.read_text()) or {}
    stated = {f"{section}.{key}" for section, values in content.items() for key in values}
    assert stated == differs, f"{path.name} restates the recipe's {sorted(stated - differs)}"


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
    (["--output.accuracy_targets", "90,94"], r"output.accuracy_targets: got '90,94', expected a list \(a,b,c\), "
                                             r"each a number in \(0, 1\]"),
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


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{previous}'] * 10)}]\n" for previous, name in zip("abcdefg", "bcdefgh"))


@pytest.mark.parametrize("content, message", [
    (bytes(range(256)) * 4, r"is not UTF-8 text \(byte 128 is 0x80\)"),
    (ALIAS_BOMB.encode(), r"expands to more values than 10,000 \(through its aliases"),
    (b"a: &a [*a]\n", r"nests deeper than 20"),
    (b"training:\n  epochs: 2\n" + b"#" * (1 << 20), r"is 1,048,59\d bytes, more than a config's 1,048,576"),
])
def test_a_config_file_that_is_not_plain_settings_is_refused_in_one_line(tmp_path, content, message):
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    with pytest.raises(UserError, match=f"config file {path} {message}"):
        parse("--config", path)


def test_settings_that_contradict_each_other_are_refused():
    with pytest.raises(UserError, match="lr_finder.start_lr 0.1 must be below lr_finder.end_lr 0.01"):
        check_train_settings(parse("--lr_finder.start_lr", "0.1", "--lr_finder.end_lr", "0.01"))
    check_train_settings(parse("--lr_finder.start_lr", "0.1", "--lr_finder.end_lr", "0.01", "--lr_finder.enabled", "false"))
    check_train_settings(parse())


def test_every_setting_says_what_changing_it_changes():
    # checkpoint.py, train.py's LR-sweep key and compare.py sort the settings by their kinds: a setting
    # without one would be sorted by nobody.
    config = Config()
    declare_train_sections(config)
    without = [".".join(path) for path, param in config.entries.items()
               if not isinstance(param, Setting) or param.kind not in KINDS]
    assert not without
    with pytest.raises(ValueError):
        Setting("fast", bool, "a kind no list knows", default=True)
