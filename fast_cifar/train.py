"""Train ResNet-18 on CIFAR-10 from FFCV .beton files.

    python fast_cifar/train.py --config rn18_configs/24ep.yaml
    python -m fast_cifar.train --config rn18_configs/24ep.yaml    # or fast-cifar-train, once installed
    python fast_cifar/train.py --config rn18_configs/cpu_small.yaml --training.epochs 2
    torchrun --nproc_per_node 8 fast_cifar/train.py --config rn18_configs/24ep.yaml

One batch, start to end: data.py's loader decodes it, crops, flips and
normalizes it onto the device in channels-last layout; `train_epoch` runs the
model under bf16 autocast, takes the label-smoothed cross-entropy, and steps
the optimizer (AdamW in the recipe) and the one-cycle schedule, whose max LR the
LR finder picked. The same loss is reported for the test split. Timings and metrics go to results.py.
"""
import contextlib
import copy
import math
import sys
from dataclasses import dataclass
from typing import NamedTuple
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from fast_cifar import checkpoint
from fast_cifar.augment import Augmentation
from fast_cifar.beton import load_dataset_info
from fast_cifar.compute import choose_compute
from fast_cifar.config import as_dict, check_train_settings, declare_train_sections, parse_config, settings_of_kind
from fast_cifar.data import BatchFormat, SampleCheck, Sampling, last_batch_size, make_loader, split_size
from fast_cifar.distributed import World, from_rank_zero, join, leave, mean_over_ranks
from fast_cifar.errors import (INTERRUPTED, Diverged, Interrupted, UserError, WrongSamples, exit_on_user_error,
                               interruptible)
from fast_cifar.files import inside, lock_folder, write_json
from fast_cifar.lr_finder import cached_sweep, find_lr, sweep_cache_key
from fast_cifar.model import MODELS, describe_model, flops_per_image, receptive_fields
from fast_cifar.optim import WeightAverage, check_schedule, make_optimizer, make_scheduler
from fast_cifar.report import training_seconds
from fast_cifar.results import RunRecord, Timer, finished_run, hardware_use, profiled, save_weights
from fast_cifar.run_folder import make_run_folder
from fast_cifar.steps import endless, evaluate, forward, train_step, training_loss


# --- the run, in the order train() takes its steps ----------------------------------------------


def train(cfg, argv=None, world=World()):
    """One run, from a config to a finished run folder; returns results.json's contents (None if the run
    to resume had already finished). SIGINT or SIGTERM, whatever the stage, ends it with INTERRUPTED and a
    line saying what to resume from; results.json and checkpoint.pt are only ever replaced whole."""
    if cfg.output.name:  # refused before any work, not after the data checks
        inside(cfg.output.dir, cfg.output.name, "output.name")
    check_train_settings(cfg)
    record = None
    try:
        with interruptible():
            compute = choose_compute(cfg, world)
            with Timer(compute.device) as data_timer:  # checks the data before anything is written
                info = load_dataset_info(cfg.data.path)
                loaders = create_loaders(cfg, info, compute)
            # end-to-end times count from before the data checks
            record, resumed = start_or_resume(cfg, argv, compute.device, world, info, data_timer.start)
            record.timings["data_setup"] = data_timer.recorded
            describe_run(record, cfg, compute, info, loaders)
            with record:  # rank 0 holds the run folder's lock until the run ends
                with record.timed("loader_warmup"):  # FFCV JIT-compiles each pipeline on its first batch
                    warm_batches = first_batch(loaders.train), first_batch(loaders.test)
                    if loaders.early_test is not loaders.test:
                        first_batch(loaders.early_test)
                model = create_model(cfg, info, compute, record)
                max_lr = choose_max_lr(cfg, model, loaders.train, resumed, compute, record)
                learner = create_learner(cfg.training, model, max_lr, len(loaders.train), resumed, compute)
                record.data["optimizer"] = type(learner.optimizer).__name__
                first_epoch = resumed["epoch"] + 1 if resumed else 1
                if first_epoch <= cfg.training.epochs:  # else the run only has its finish left
                    compile_learner(learner, loaders, warm_batches, cfg.training.compile, record)
                fit(cfg, record, learner, loaders, first_epoch, world)
                return finish(cfg, record, learner.result)
    except RunFinished as finished:
        if world.is_main:
            print(finished)
        return None
    except Interrupted as signal_name:
        saved = record.checkpointed_epoch if record else 0
        where = (f"resume after epoch {saved} with --training.resume {record.folder / checkpoint.CHECKPOINT}"
                 if saved else "no checkpoint to resume from yet")
        if world.is_main:
            print(f"stopped by {signal_name}: {where}", file=sys.stderr)
        sys.exit(INTERRUPTED)


class Loaders(NamedTuple):
    train: object
    test: object  # the last epoch's
    early_test: object  # the epochs before the last score this one: `test`, unless data.early_test_subset


def create_loaders(cfg, info, compute):
    """Train and test loaders for this rank; training.batch_size is the global batch, split over ranks."""
    data, training, world = cfg.data, cfg.training, compute.world
    if training.batch_size % world.size:
        raise UserError(f"training.batch_size {training.batch_size} does not split over {world.size} processes")
    kind, shard = compute.loader, (world.rank, world.size)
    augmentation = Augmentation(cfg.augment.flip, cfg.augment.cutout)

    def loader(split, batch_size, train, subset):
        return make_loader(info, split, BatchFormat(batch_size, compute.device, compute.dtype, compute.channels_last),
                           Sampling(train, training.seed, subset, shard, augmentation), kind, data.loader_threads)

    test = loader("test", training.test_batch_size, False, data.test_subset)
    early = data.early_test_subset and data.early_test_subset < split_size(info, "test", data.test_subset)
    loaders = Loaders(loader("train", training.batch_size // world.size, True, data.train_subset), test,
                      loader("test", training.test_batch_size, False, data.early_test_subset) if early else test)
    if len(loaders.train) == 0:
        raise UserError(f"training.batch_size {training.batch_size} is larger than the "
                        f"{data.train_subset or info.records['train']} training images")
    check_schedule(training, len(loaders.train))
    return loaders


def start_or_resume(cfg, argv, device, world, info, started):
    """The run record, and the checkpoint state to continue from (None for a fresh run).

    Rank 0 holds the run folder's lock until the process ends, so two runs never share a folder.
    """
    if not cfg.training.resume:
        folder, lock = make_run_folder(cfg.output.dir, cfg.output.name, cfg.output.overwrite) \
            if world.is_main else (None, None)
        record = RunRecord(folder, as_dict(cfg), device, argv, lock=lock, started=started, writes=world.is_main)
        return record, None
    path = checkpoint.find(cfg.training.resume, cfg.output.dir, cfg.output.name)
    lock = lock_folder(path.parent) if world.is_main else None
    state = checkpoint.load(path, as_dict(cfg), info.sha256)
    if state["epoch"] >= cfg.training.epochs and finished_run(path.parent) and (path.parent / "model.pt").is_file():
        raise RunFinished(f"nothing left to do: {path.parent} finished all {cfg.training.epochs} epochs; "
                          f"its results are in {path.parent / 'results.json'}")
    record = RunRecord(path.parent, as_dict(cfg), device, argv, lock=lock, started=started, writes=world.is_main)
    saved = state["record"]
    record.data.update({key: saved[key] for key in ("epochs", "lr_finder", "max_lr", "warnings") if key in saved})
    record.data["resumed_after_epoch"] = record.checkpointed_epoch = state["epoch"]
    record.say(f"resuming {path} after epoch {state['epoch']}" if state["epoch"] < cfg.training.epochs else
               f"finishing {path.parent}: it trained all {state['epoch']} epochs but was stopped before it wrote "
               f"model.pt, its plots and its finished results.json")
    return record, state


class RunFinished(Exception):
    """Resuming a run that has already trained every epoch: nothing to do, nothing to rewrite."""


def describe_run(record, cfg, compute, info, loaders):
    """What results.json says about the set-up, and the run's first line."""
    world = compute.world
    record.data["precision"] = {"compute": compute.precision, "why": compute.precision_why}
    record.data["channels_last"] = {"used": compute.channels_last, "why": compute.layout_why}
    record.data["onednn"] = torch.backends.mkldnn.enabled
    record.data["loader"] = compute.loader
    record.data["data"] = {"folder": str(info.folder), "source": info.source, "records": info.records,
                           "train_images_per_epoch": len(loaders.train) * cfg.training.batch_size,
                           "test_images": split_size(info, "test", cfg.data.test_subset), "processes": world.size,
                           "sha256": info.sha256}
    record.say(f"run folder: {record.folder} | device: {record.data['device']['name']} | compute dtype: "
               f"{compute.dtype} ({compute.precision_why}) | channels-last: {compute.channels_last}"
               + (f" | {world.size} processes" if world.size > 1 else ""))
    if cfg.model.channels_last and not compute.channels_last:
        record.say(f"note: {compute.layout_why}")


def first_batch(loader):
    """The first batch of a fresh epoch: for FFCV's first epoch this includes JIT-compiling the pipeline."""
    with contextlib.closing(iter(loader)) as batches:
        return next(batches)


def create_model(cfg, info, compute, record):
    model = MODELS[cfg.model.arch](len(info.classes), cfg.model.width).to(compute.device,
                                                                          memory_format=compute.memory_format)
    record.data["model"] = {**describe_model(model, cfg.model.arch), "receptive_fields": receptive_fields(model),
                            "classes": len(info.classes)}
    return model


def choose_max_lr(cfg, model, train_loader, resumed, compute, record):
    """A resumed run's max LR, else the LR finder's (once, on rank 0, sent to every rank), else training.lr."""
    if resumed:
        max_lr = resumed["max_lr"]
    elif cfg.lr_finder.enabled:
        max_lr = run_lr_finder(cfg, model, train_loader, compute, record) if compute.world.is_main else 0.0
        max_lr = from_rank_zero(max_lr, compute.world, compute.device)
    else:
        max_lr = cfg.training.lr
    record.data["max_lr"] = max_lr
    return max_lr


def run_lr_finder(cfg, model, train_loader, compute, record):
    """The range test on a copy of the model; returns the suggested max LR and plots the sweep."""
    finder, training = cfg.lr_finder, cfg.training

    def loss_of(net, images, labels):
        return training_loss(net, images, labels, compute.dtype, training.label_smoothing)[0]

    def optimizer_for(net):  # the optimizer training starts with: same betas, decay and groups
        return make_optimizer(training, net, finder.start_lr, fused=compute.device.type == "cuda")

    cache, key = Path(cfg.output.dir) / LR_FINDER_CACHE, sweep_cache_key(sweep_inputs(cfg, compute, record))
    with record.timed("lr_finder"):
        sweep = cached_sweep(cache, key) if finder.cache else None
        if sweep is None:
            with contextlib.closing(endless(train_loader)) as batches:
                sweep = find_lr(model, batches, loss_of, optimizer_for, finder)
            if finder.cache:
                write_json(cache / f"{key}.json", {"key": key, "sweep": sweep.to_dict()})
        else:
            record.say(f"LR finder: reusing the sweep of an earlier run with the same settings, data and seed "
                       f"({cache / key}.json; --lr_finder.cache false sweeps again)")
            record.data["lr_finder_cached_from"] = str(cache / f"{key}.json")
    record.data["lr_finder"] = sweep.to_dict()
    from fast_cifar.plots import plot_lr_finder  # matplotlib only when a plot is drawn
    plot_lr_finder(sweep, record.folder / "lr_finder.png")
    if sweep.stop == "end_lr" and not sweep.flat:
        record.warn(f"warning: the LR finder's loss never rose {100 * finder.rise:g}% above its minimum up to "
                    f"lr_finder.end_lr {finder.end_lr:g}: the valley's edge is past the sweep; raise end_lr")
    valley = "a flat valley" if sweep.flat else "valley"
    print(f"LR finder: {valley} from LR {sweep.valley_start_lr:.2e} to {sweep.edge_lr:.2e} "
          f"({sweep.valley_decades:.1f} decades, {len(sweep.lrs)} steps); max LR {sweep.suggested_lr:.2e} = "
          f"{finder.multiplier:g} x {sweep.anchor_lr:.2e}, where the loss came within {100 * finder.anchor_rise:g}% "
          f"of its minimum ({record.timings['lr_finder']:.1f}s)")
    if sweep.inconclusive:
        record.warn(f"warning: the LR finder's sweep was inconclusive ({sweep.inconclusive}): training uses "
                    f"training.lr {training.lr:g} instead; sweep more slowly or set training.lr")
        return training.lr
    return sweep.suggested_lr


LR_FINDER_CACHE = ".lr_finder"  # inside output.dir: one small JSON file per distinct sweep


def sweep_inputs(cfg, compute, record):
    """Everything a sweep depends on: the settings of the kind "sweep" (config.py; not the schedule, the epochs
    or the LR training runs at), the data's identity, and the device and versions that compute it."""
    config = as_dict(cfg)
    settings = {}
    for name in sorted(settings_of_kind("sweep")):
        section, key = name.split(".")
        settings.setdefault(section, {})[key] = config[section][key]
    return {"settings": settings, "data": record.data["data"]["sha256"]["train"], "loader": compute.loader,
            "precision": compute.precision, "channels_last": compute.channels_last,
            "device": record.data["device"], "versions": record.data["versions"]}


@dataclass
class Learner:
    """What training updates, in one place. `model`, `trainer` and `evaluator` are three handles on one
    set of weights: `model` is the plain module (checkpoints, the LR finder), `trainer` runs training
    steps (compiled, and wrapped in DistributedDataParallel across processes), `evaluator` runs
    evaluation (compiled, never synchronizing processes). With training.ema_decay, `average` holds the
    moving average of the weights, and `evaluator` runs it instead: the averaged model is the result."""
    model: torch.nn.Module
    trainer: torch.nn.Module
    evaluator: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    dtype: torch.dtype
    average: WeightAverage = None
    average_decay: float = 0.0  # this epoch's: 0 (a copy each step) before training.ema_start_epoch

    @property
    def result(self):
        """The model a run evaluates and saves."""
        return self.average.module if self.average else self.model


def create_learner(training, model, max_lr, steps_per_epoch, resumed, compute):
    """Optimizer, one-cycle schedule and the compiled handles on the model; a resumed run's state restored."""
    optimizer = make_optimizer(training, model, max_lr, fused=compute.device.type == "cuda")
    scheduler = make_scheduler(training, optimizer, max_lr, steps_per_epoch)
    average = WeightAverage(model) if training.ema_decay else None
    if resumed:
        checkpoint.restore(resumed, model, optimizer, scheduler, average)

    def compiled(net):
        return torch.compile(net, mode=training.compile_mode) if training.compile else net

    trainer = evaluator = compiled(model)
    if average:
        evaluator = compiled(average.module)
    if compute.world.size > 1:  # gradients sync through DDP; evaluation syncs nothing, so ranks never wait
        device_ids = None if compute.device.type == "cpu" else [compute.device.index]
        trainer = compiled(DistributedDataParallel(model, device_ids=device_ids))
    return Learner(model, trainer, evaluator, optimizer, scheduler, compute.dtype, average)


def compile_learner(learner, loaders, warm_batches, compiled, record):
    """torch.compile's graphs, built (or read from its cache) before the first timed step."""
    with record.timed("compile"):
        warm_up(learner, *warm_batches, {last_batch_size(loaders.test), last_batch_size(loaders.early_test)})
    if compiled:
        record.data["compile_cache"] = compile_cache_use()


def warm_up(learner, train_batch, test_batch, last_test_sizes):
    """Trigger torch.compile's train and eval graphs (and cuDNN's choices) on real batches,
    then restore weights, BatchNorm statistics and optimizer state as they were."""
    model, optimizer, dtype = learner.model, learner.optimizer, learner.dtype
    saved_model, saved_optimizer = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    learner.trainer.train()
    train_step(learner.trainer, optimizer, *train_batch, dtype)
    learner.evaluator.eval()
    with torch.no_grad():  # every batch shape evaluation will see: full batches and the last one
        for size in {len(test_batch[0]), *last_test_sizes}:
            forward(learner.evaluator, test_batch[0][:size], dtype)
    model.load_state_dict(saved_model)  # copies in place: the compiled graphs stay valid
    optimizer.load_state_dict(saved_optimizer)


def compile_cache_use():
    """How many compiled graphs torch.compile found in its on-disk caches (hits) and had to build (misses).
    Both caches are on by default, under $TORCHINDUCTOR_CACHE_DIR (else /tmp/torchinductor_<user>), so a
    second run of the same config skips most of the first one's compilation."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir  # loaded with torch.compile, not before

    counters = torch._dynamo.utils.counters
    return {"inductor_hits": counters["inductor"]["fxgraph_cache_hit"],
            "inductor_misses": counters["inductor"]["fxgraph_cache_miss"],
            "autograd_hits": counters["aot_autograd"]["autograd_cache_hit"],
            "autograd_misses": counters["aot_autograd"]["autograd_cache_miss"],
            "cache_dir": cache_dir()}


def fit(cfg, record, learner, loaders, first_epoch, world):
    """The epochs: train, evaluate, record, checkpoint after each."""
    training, output = cfg.training, cfg.output
    epochs, label_smoothing = training.epochs, training.label_smoothing
    record.mark_first_step()
    for epoch in range(first_epoch, epochs + 1):
        loaders.train.next_epoch = epoch  # order and augmentations follow from (seed, epoch)
        learner.average_decay = training.ema_decay if epoch >= training.ema_start_epoch else 0.0
        progress = f"epoch {epoch}/{epochs}" if world.is_main else None
        profiling = epoch == output.profile_epoch and record.writes
        try:
            with profiled(profiling, record.folder, record.device), Timer(record.device) as train_timer:
                train_loss, train_accuracy, train_checked = train_epoch(learner, loaders.train, label_smoothing,
                                                                        progress, world)
            with Timer(record.device) as eval_timer:
                # TTA multiplies an evaluation's forwards, and only the last epoch's is reported.
                last = epoch == epochs
                test_metrics = evaluate(learner.evaluator, loaders.test if last else loaders.early_test,
                                        learner.dtype, label_smoothing, last_epoch_tta(training) if last else (),
                                        world)
        except Diverged as error:
            raise Diverged(f"{error} in epoch {epoch}; {last_good(record)}") from None
        except WrongSamples as error:
            raise WrongSamples(f"epoch {epoch}: {error}") from None
        warn_if_exploding(record, train_loss, epoch)
        record.add_epoch(epoch=epoch, train_loss=train_loss, train_accuracy=train_accuracy,
                         train_samples_checked=train_checked, **test_metrics,
                         train_seconds=train_timer.recorded, eval_seconds=eval_timer.recorded,
                         lr=learner.scheduler.get_last_lr()[0], profiled=profiling)
        record.summarize(output.accuracy_targets)
        if output.checkpoint and record.writes:
            checkpoint.save(record.folder, epoch, learner, record.data)
            record.checkpointed_epoch = epoch
        record.save()  # a partial record survives a crash
        record.say(f"epoch {epoch:>3}/{epochs}  train loss {train_loss:.3f} acc {100 * train_accuracy:5.2f}%  "
                   f"test loss {test_metrics['test_loss']:.3f} acc {100 * test_metrics['test_accuracy']:5.2f}%  "
                   f"({train_timer.seconds:.1f}s + {eval_timer.seconds:.1f}s)")


def train_epoch(learner, loader, label_smoothing, description, world=World()):
    """One pass over the train split; sums stay on the device so no step waits for the GPU. Returns the
    loss, the accuracy and how many samples `SampleCheck` found to be the epoch's order."""
    model, optimizer, scheduler, dtype = learner.trainer, learner.optimizer, learner.scheduler, learner.dtype
    model.train()
    check = SampleCheck(loader)
    loss_sum = correct = 0
    first_bad_step = -1  # becomes a device tensor: checked once, at the end of the epoch
    for step, (images, labels) in enumerate(tqdm(loader, desc=description, leave=False, disable=description is None),
                                            start=1):
        check.add(labels)
        loss, logits = train_step(model, optimizer, images, labels, dtype, label_smoothing)
        scheduler.step()
        if learner.average:
            learner.average.update(learner.average_decay)
        loss_sum += loss * len(labels)
        correct += (logits.argmax(1) == labels).sum()
        first_bad_step = torch.where((first_bad_step < 0) & ~torch.isfinite(loss), step, first_bad_step)
    if int(first_bad_step) >= 0:
        raise Diverged(f"the training loss became non-finite at step {int(first_bad_step)} of {len(loader)}")
    checked = check.verify("train")
    return *mean_over_ranks([loss_sum, correct], checked, world), checked


def last_epoch_tta(training):
    return tuple(name for name, wanted in (("flip", training.eval_flip_tta),
                                           ("multicrop", training.eval_multicrop_tta)) if wanted)


EXPLOSION_FACTOR = 4  # a loss this many times a uniform guess's means training has blown up


def warn_if_exploding(record, train_loss, epoch):
    """A loss far above a uniform guess's (ln of the class count) that has not turned NaN yet; said once."""
    uniform = math.log(record.data["model"]["classes"])
    if train_loss > EXPLOSION_FACTOR * uniform and not any("blown up" in w for w in record.data["warnings"] or []):
        record.warn(f"warning: the training loss in epoch {epoch} is {train_loss:.3g}, far above a uniform guess's "
                    f"{uniform:.2f}: training has blown up; the max LR {record.data['max_lr']:.3g} is likely too high")


def last_good(record):
    if record.checkpointed_epoch:
        return f"the last good checkpoint, after epoch {record.checkpointed_epoch}, is " \
               f"{record.folder / checkpoint.CHECKPOINT}"
    return "no checkpoint was written before it"


def finish(cfg, record, model):
    """The final record, weights and plots, and the headline: last-epoch accuracy first."""
    best = record.summarize(cfg.output.accuracy_targets)
    epochs = record.data["epochs"]  # every epoch, a resumed run's earlier ones too: each timed its own training
    images = record.data["data"]["train_images_per_epoch"] * len(epochs)
    record.data["hardware_use"] = hardware_use(flops_per_image(model), images, training_seconds(record.data),
                                               record.data["device"])
    if not record.writes:
        return record.data
    save_weights(model, record.folder / "model.pt")  # the result: written with or without checkpoints
    from fast_cifar.plots import plot_curves  # matplotlib only when a plot is drawn
    plot_curves(record.data["epochs"], record.folder / "loss_accuracy_plots.png")
    record.save(finished=True)
    print(f"results: {record.folder / 'results.json'}")
    last = record.data["last"]
    tta = f" ({100 * last['test_accuracy_flip_tta']:.2f}% with flip TTA)" if "test_accuracy_flip_tta" in last else ""
    print(f"Last-epoch Test Accuracy: {100 * last['test_accuracy']:.2f}% at Epoch: {last['epoch']}{tta}")
    print(f"Maximum Test Accuracy: {100 * best['test_accuracy']:.2f}% at Epoch: {best['epoch']}")
    return record.data


@exit_on_user_error
def main(argv=None):
    cfg = parse_config(declare_train_sections, argv, description=__doc__)
    world = join()  # torchrun's processes; a world of one otherwise
    try:
        return train(cfg, argv, world)
    finally:
        leave(world)


if __name__ == "__main__":
    main()
