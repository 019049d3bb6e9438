"""Every training setting, declared once with fastargs, read from YAML and the command line.

    python fast_cifar/train.py --config rn18_configs/24ep.yaml --training.epochs 2

Values come from the YAML file first, then from `--section.key value` flags.
Unlike plain fastargs, unknown keys, bad values and missing files are errors
(one line each), and booleans accept `true/false` from the command line.
"""
import argparse
import difflib
import math
import re
from pathlib import Path

import yaml
from fastargs import Config, Param, Section
from fastargs.validation import Checker, OneOf

from fast_cifar.errors import UserError


class Boolean(Checker):
    """fastargs' own `bool` turns the string 'false' into True; this one does not."""

    def check(self, value):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "yes", "on", "1"):
            return True
        if text in ("false", "no", "off", "0"):
            return False
        raise ValueError(value)

    def help(self):
        return "true or false"


class FloatList(Checker):
    """A YAML list of numbers, or comma-separated numbers on the command line, each one `item` accepts."""

    def __init__(self, item):
        self.item = item

    def check(self, value):
        items = value.split(",") if isinstance(value, str) else value
        return [self.item.check(item) for item in items]

    def help(self):
        return f"a list (a,b,c), each {self.item.help()}"


class Integer(Checker):
    """Whole numbers only: fastargs' `int` turns 1.7 into 1 and `true` into 1 without a word."""

    def __init__(self, min=None, max=None):
        self.min, self.max = min, max

    def check(self, value):
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(value)
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise ValueError(value)
        return value

    def help(self):
        if self.max is not None:
            return f"an integer from {self.min} to {self.max}"
        return "an integer" + (f" >= {self.min}" if self.min is not None else "")


class Number(Checker):
    """A finite number in a range: fastargs' `float` lets NaN and infinity through."""

    def __init__(self, min=None, max=None, min_exclusive=False):
        self.min, self.max, self.min_exclusive = min, max, min_exclusive

    def check(self, value):
        if isinstance(value, bool):
            raise ValueError(value)
        value = float(value)  # YAML reads 1e-3 (no dot) as a string; float() takes it
        if not math.isfinite(value):
            raise ValueError(value)
        if self.min is not None and (value < self.min or (self.min_exclusive and value == self.min)):
            raise ValueError(value)
        if self.max is not None and value > self.max:
            raise ValueError(value)
        return value

    def help(self):
        if self.max is None:
            return f"a finite number {'>' if self.min_exclusive else '>='} {self.min}" if self.min is not None \
                else "a finite number"
        return f"a number in {'(' if self.min_exclusive else '['}{self.min}, {self.max}]"


POSITIVE_INT = Integer(min=1)
NON_NEGATIVE_INT = Integer(min=0)
POSITIVE_FLOAT = Number(min=0, min_exclusive=True)
NON_NEGATIVE_FLOAT = Number(min=0)


# What changing a setting changes. Every list that sorts the settings is derived from these kinds: what a
# resume must keep (checkpoint.py), what the LR sweep depends on (train.py), what compare.py shows.
KINDS = {
    "sweep": "shapes the LR sweep and the training after it",
    "training": "shapes the training after the LR sweep, or its evaluation",
    "speed": "changes how fast a run goes, not what it trains",
    "place": "names where things are read or written, or whether they are",
    "report": "changes what is reported about a run, not the run",
}


class Setting(Param):
    """A fastargs Param that says what changing it changes: its `kind`, one of KINDS."""

    def __init__(self, kind, checker, desc, default):
        if kind not in KINDS:
            raise ValueError(f"unknown kind of setting {kind!r}: one of {', '.join(KINDS)}")
        super().__init__(checker, desc, default=default)
        self.kind = kind


def settings_of_kind(*kinds):
    """The names ("section.key") of train.py's settings of these kinds."""
    config = Config()
    declare_train_sections(config)
    return {".".join(path) for path, param in config.entries.items() if getattr(param, "kind", None) in kinds}


def declare_train_sections(config):
    """Every setting of train.py. The defaults are the recipe, chosen by the tuning study in
    benchmarks/results/tuning_h100: ResNet-18, 24 epochs at batch 512, random crop and flip, AdamW
    with a one-cycle schedule whose max LR comes from an LR range test, bf16 and torch.compile with
    CUDA graphs. A config file states only what it changes."""
    Section("data", "Where the .beton files are and how to load them", config_descriptor=config).params(
        path=Setting("place", str, "folder with train.beton, test.beton and dataset.json", default="data/cifar10"),
        # auto: on an H100 the device loader ran the recipe in 44 s against FFCV's 122 s, data checks to
        # results.json (no JIT, and 2.3x the images/s under CUDA graphs); on a 2-core CPU the two are level.
        loader=Setting("sweep", OneOf(["auto", "ffcv", "device"]), "ffcv: FFCV's loader; device: the split in the "
                       "training device's memory (GPU or CPU), augmented there; auto: device on a GPU, ffcv on a CPU",
                       default="auto"),
        loader_threads=Setting("speed", Integer(min=-1), "FFCV loader threads (-1: all cores)", default=-1),
        train_subset=Setting("sweep", NON_NEGATIVE_INT, "train on a fixed random subset of N images (0: all)",
                             default=0),
        test_subset=Setting("training", NON_NEGATIVE_INT, "evaluate on a fixed random subset of N images (0: all)",
                            default=0),
        # On a CPU, evaluation can cost as much as training: the epochs before the last may score a sample,
        # while the last epoch, the headline, is always scored on the whole test split (or test_subset).
        early_test_subset=Setting("training", NON_NEGATIVE_INT, "score the epochs before the last on a fixed "
                                  "random subset of N test images (0: as the last epoch)", default=0),
    )
    # Both off the recipe's defaults until the frontier study (benchmarks/frontier_candidates.yaml) measures
    # them on ResNet-18: airbench's ablations show each cutting epochs for its own network.
    Section("augment", "What the training images go through besides the random crop", config_descriptor=config).params(
        flip=Setting("sweep", OneOf(["random", "alternating"]), "random: a new coin per image each epoch; "
                     "alternating: a random first choice, then mirrored in every other epoch", default="random"),
        cutout=Setting("sweep", Integer(min=0, max=32), "side in pixels of a square set to the mean colour, placed "
                       "at random inside each training image (0: none)", default=0),
    )
    Section("model", "The network, for 32x32 images", config_descriptor=config).params(
        arch=Setting("sweep", OneOf(["resnet18", "resnet9"]), "resnet18: the recipe's; resnet9: the DAWNBench "
                     "speedrun network (benchmarks/peers.yaml trains it)", default="resnet18"),
        width=Setting("sweep", POSITIVE_INT, "channels of the first stage (64 is ResNet-18's and ResNet-9's)",
                      default=64),
        channels_last=Setting("sweep", Boolean(), "channels-last memory format", default=True),
    )
    Section("training", "The optimizer, its one-cycle schedule, and how the steps run", config_descriptor=config).params(
        epochs=Setting("training", POSITIVE_INT, "number of epochs", default=24),
        batch_size=Setting("sweep", POSITIVE_INT, "training batch size, in images", default=512),
        test_batch_size=Setting("training", POSITIVE_INT, "evaluation batch size, in images", default=1000),
        # AdamW: +0.6 points over Adam with L2 decay in the tuning study.
        optimizer=Setting("sweep", OneOf(["adam", "adamw", "sgd"]), "adam: L2 decay in the gradient; adamw: "
                          "decoupled decay; sgd: momentum SGD", default="adamw"),
        lr=Setting("training", POSITIVE_FLOAT, "max LR of the one-cycle schedule, for the batch-mean loss at this "
                   "batch size, when the LR finder is off (or its sweep was inconclusive)", default=2e-3),
        # AdamW multiplies its decay by the LR, hence a value far above SGD's usual 5e-4.
        weight_decay=Setting("sweep", NON_NEGATIVE_FLOAT, "weight decay (L2 for adam and sgd, decoupled for adamw)",
                             default=0.2),
        decay_norm_and_bias=Setting("sweep", Boolean(), "also decay BatchNorm weights and biases, and other biases",
                                    default=False),
        # airbench trains BatchNorm's biases at a far higher LR than its weights: the frontier study tries it.
        norm_lr_multiplier=Setting("sweep", POSITIVE_FLOAT, "the LR of BatchNorm's weights and biases, as a multiple "
                                   "of the max LR the schedule gives the other parameters", default=1.0),
        beta2=Setting("sweep", Number(min=0, max=0.9999), "Adam's second-moment decay", default=0.999),
        nesterov=Setting("sweep", Boolean(), "Nesterov momentum (sgd)", default=False),
        # One-cycle: the LR warms up from max/25 over the first quarter of the steps, then anneals
        # (cosine) to max/25/1e4; beta1 moves the other way, lowest where the steps are largest.
        pct_start=Setting("training", Number(min=0.01, max=0.99), "fraction of steps spent warming up", default=0.25),
        div_factor=Setting("training", Number(min=1), "the schedule starts at max LR / div_factor", default=25.0),
        final_div_factor=Setting("training", Number(min=1), "and ends at its start LR / final_div_factor",
                                 default=1e4),
        anneal_strategy=Setting("training", OneOf(["cos", "linear"]), "shape of both phases", default="cos"),
        cycle_momentum=Setting("training", Boolean(), "move beta1 (sgd: momentum) against the LR, max_momentum to "
                               "base_momentum and back", default=True),
        base_momentum=Setting("training", Number(min=0, max=0.9999), "beta1 (momentum) at the peak LR", default=0.85),
        max_momentum=Setting("sweep", Number(min=0, max=0.9999), "beta1 (momentum) at the start and end; the fixed "
                             "value without cycle_momentum", default=0.95),
        # airbench's ablations: a moving average of the weights buys accuracy at short schedules. Off until the
        # frontier study measures it on ResNet-18.
        ema_decay=Setting("training", Number(min=0, max=0.9999), "per-step decay of a moving average of the weights "
                          "and BatchNorm's statistics, which is evaluated and saved in their place (0: off)",
                          default=0.0),
        ema_start_epoch=Setting("training", POSITIVE_INT, "the epoch from which the average accumulates (before it, "
                                "it is a copy of the weights)", default=1),
        label_smoothing=Setting("sweep", Number(min=0, max=0.99), "label smoothing of the loss", default=0.1),
        precision=Setting("sweep", OneOf(["auto", "bf16", "fp32"]), "auto: bf16 on CUDA and on CPUs with native bf16 "
                          "(AVX512_BF16 or AMX), else fp32", default="auto"),
        compile=Setting("speed", Boolean(), "torch.compile the model", default=True),
        # CUDA graphs: on an H100 a step is launch-bound without them (no effect on a CPU).
        compile_mode=Setting("speed", OneOf(["default", "reduce-overhead", "max-autotune"]), "torch.compile mode",
                             default="reduce-overhead"),
        eval_flip_tta=Setting("training", Boolean(), "also report the last epoch's test accuracy averaged over a "
                              "horizontal flip (apart: the headline is the plain last-epoch accuracy)", default=True),
        eval_multicrop_tta=Setting("training", Boolean(), "also report the last epoch's test accuracy averaged over "
                                   "six views: the image and its mirror, each also moved a pixel up-left and "
                                   "down-right", default=False),
        device=Setting("sweep", OneOf(["auto", "cpu", "cuda"]), "auto: the GPU when there is one", default="auto"),
        seed=Setting("sweep", Integer(min=0), "seed for weights, data order and augmentation", default=0),
        deterministic=Setting("sweep", Boolean(), "deterministic kernels only: on a CPU two runs with the same seed "
                              "give the same numbers; on a GPU cuDNN's autotuning is off and kernels without a "
                              "deterministic version raise an error (slower)", default=False),
        resume=Setting("place", str, "checkpoint.pt or run folder to continue, or 'auto' (empty: start afresh)",
                       default=""),
    )
    # The rule, chosen by replaying candidate rules on every recorded sweep and training with the picks:
    # benchmarks/README.md, "The LR finder's rule".
    Section("lr_finder", "LR range test run before training to pick the max LR", config_descriptor=config).params(
        enabled=Setting("sweep", Boolean(), "run it (else use training.lr)", default=True),
        cache=Setting("speed", Boolean(), "reuse the sweep of an earlier run with the same settings, data and seed "
                      "(kept in output.dir/.lr_finder): the same inputs give the same sweep", default=True),
        start_lr=Setting("sweep", POSITIVE_FLOAT, "first LR of the sweep", default=1e-4),
        end_lr=Setting("sweep", POSITIVE_FLOAT, "last LR of the sweep, if it has not stopped before (small models "
                       "can stay in the valley up to LR 1)", default=10.0),
        num_iters=Setting("sweep", POSITIVE_INT, "steps from start_lr to end_lr (16.5 per decade in the recipe); the "
                          "sweep stops sooner, at the valley's edge", default=83),
        smoothing=Setting("sweep", Number(min=0, max=0.999), "EMA factor of the smoothed loss", default=0.9),
        rise=Setting("sweep", Number(min=0.001, max=10), "the valley: the LRs whose smoothed loss is within this "
                     "fraction of its minimum; the sweep ends at its far edge", default=0.05),
        flat_decades=Setting("sweep", POSITIVE_FLOAT, "a valley this many decades of LR wide or more is reported as "
                             "flat (on the console, in results.json and on lr_finder.png)", default=2.0),
        anchor_rise=Setting("sweep", Number(min=0.001, max=10), "the anchor: the LR at which the falling smoothed "
                            "loss first comes within this fraction of its minimum", default=0.07),
        # x3 puts the H200 recipe's picks at 3.1e-3 to 4.2e-3, where its seeds trained to 89.8%, and cpu_small's
        # near its best fixed LR (benchmarks/results/lr_rule).
        multiplier=Setting("sweep", POSITIVE_FLOAT, "the max LR it suggests: the anchor LR x multiplier", default=3.0),
    )
    Section("output", "What a run writes", config_descriptor=config).params(
        dir=Setting("place", str, "parent folder of the run folders", default="runs"),
        name=Setting("place", str, "run folder name, one folder inside output.dir (empty: date and time)", default=""),
        accuracy_targets=Setting("report", FloatList(Number(min=0, max=1, min_exclusive=True)), "test accuracies "
                                 "whose time-to-reach is recorded, as fractions (0.9, not 90)",
                                 default=[0.90, 0.93, 0.94, 0.95]),
        overwrite=Setting("place", Boolean(), "replace the results of an earlier run in the same folder",
                          default=False),
        checkpoint=Setting("place", Boolean(), "checkpoint.pt after every epoch, to resume from (model.pt, the "
                           "result, is written either way)", default=True),
        profile_epoch=Setting("report", NON_NEGATIVE_INT, "profile this epoch's training into profile.txt and "
                              "kernels.md (0: none)", default=0),
    )


def check_train_settings(cfg):
    """What no single setting's check can see: settings that make a run meaningless together."""
    finder = cfg.lr_finder
    if finder.enabled and finder.start_lr >= finder.end_lr:
        raise UserError(f"lr_finder.start_lr {finder.start_lr:g} must be below lr_finder.end_lr {finder.end_lr:g}: "
                        f"the sweep raises the LR from one to the other")


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        raise UserError(message)


def parse_config(declare_sections, argv=None, description=""):
    """Declare the sections, read `--config FILE` then the flags, validate; return a namespace."""
    config = Config()
    declare_sections(config)
    parser = _OneLineParser(description=description, allow_abbrev=False, argument_default=argparse.SUPPRESS,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", "--config-file", "-C", dest="config_file", help="YAML file of settings")
    for namespace, paths in config.sections_to_entries.items():
        group = parser.add_argument_group(f"{'.'.join(namespace)}: {config.sections[namespace].desc}")
        for path in paths:
            param = config.entries[path]
            help_text = f"{param.desc}; {param.checker.help()} [default: {param.default}]"
            group.add_argument("--" + ".".join(path), metavar="VALUE", help=help_text)
    flags = vars(parser.parse_args(argv))  # holds only what was given

    config_file = flags.pop("config_file", None)
    if config_file:
        config.collect(read_yaml(config_file, config))
    config.collect(flags)  # flags override the file
    return validated(config)


# A config file is a few lines of settings: far larger, deeper or more expanded ones are refused before
# they are built, so that a file of a few bytes cannot expand (through YAML aliases) into gigabytes.
CONFIG_LIMITS = {"bytes": 1 << 20, "nodes": 10_000, "depth": 20}


def read_yaml(file, config):
    path = Path(file)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    if path.stat().st_size > CONFIG_LIMITS["bytes"]:
        raise UserError(f"config file {path} is {path.stat().st_size:,} bytes, more than a config's "
                        f"{CONFIG_LIMITS['bytes']:,}: is it the right file?")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"config file {path} is not UTF-8 text (byte {error.start} is 0x{error.object[error.start]:02x}): "
                        f"is it the right file?") from None
    try:
        check_config_size(yaml.compose(text, Loader=yaml.SafeLoader), path)
        content = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise UserError(f"config file {path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(content, dict):
        raise UserError(f"config file {path} must hold sections of key: value pairs")
    known = {".".join(entry) for entry in config.entries}
    for key in _flat_keys(content):
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            raise UserError(f"unknown config key '{key}' in {path}" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
    return content


def check_config_size(root, path):
    """Refuse a composed YAML document that is too deep or that expands, aliases followed, past the limits."""
    nodes = 0
    pending = [(root, 1)] if root is not None else []
    while pending:
        node, depth = pending.pop()
        nodes += 1
        if nodes > CONFIG_LIMITS["nodes"] or depth > CONFIG_LIMITS["depth"]:
            what = "nests deeper than" if depth > CONFIG_LIMITS["depth"] else "expands to more values than"
            limit = CONFIG_LIMITS["depth"] if depth > CONFIG_LIMITS["depth"] else CONFIG_LIMITS["nodes"]
            raise UserError(f"config file {path} {what} {limit:,} (through its aliases, if it has any): "
                            f"a config is a few sections of settings")
        if isinstance(node, yaml.MappingNode):
            pending += [(child, depth + 1) for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            pending += [(child, depth + 1) for child in node.value]


def _flat_keys(tree, prefix=""):
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flat_keys(value, name + ".")
        else:
            yield name


def validated(config):
    errors = config.validate(mode="errordict")
    if errors:
        path = next(iter(errors))
        param = config.entries[path]
        got = config.content.get(path)
        raise UserError(f"bad value for {'.'.join(path)}: got {got!r}, expected {param.checker.help()}")
    return config.get()


def as_dict(namespace):
    """The nested namespace back as plain dicts, for JSON."""
    return {key: as_dict(value) if hasattr(value, "__dict__") else value for key, value in vars(namespace).items()}
