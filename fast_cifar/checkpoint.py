"""Surviving interruption: a checkpoint after every epoch, and resuming from it.

checkpoint.pt holds everything the next epoch depends on: weights, BatchNorm
statistics, optimizer and scheduler state, the epoch, the max LR the finder
chose, the RNG states and the record so far. It is written atomically, so the
file on disk is always the last complete epoch. It holds only tensors and plain
Python values, so it is read back with `torch.load(weights_only=True)`: a
checkpoint from elsewhere can hold data, never code that runs on loading. Each epoch's data order and
augmentations follow from (seed, epoch), so a resumed run sees the batches the
uninterrupted run would have seen.
"""
import pickle
import random
from pathlib import Path

import numpy as np
import torch

from fast_cifar.config import settings_of_kind
from fast_cifar.errors import UserError
from fast_cifar.files import atomic_file, inside

CHECKPOINT = "checkpoint.pt"


def rng_states():
    """Torch's, NumPy's and Python's RNG states as tensors and plain values (no NumPy objects)."""
    _, keys, position, has_gauss, cached_gauss = np.random.get_state()
    numpy_state = {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                   "has_gauss": int(has_gauss), "cached_gauss": float(cached_gauss)}
    return {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}


def set_rng_states(states):
    torch.set_rng_state(states["torch"])
    numpy_state = states["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["position"],
                         numpy_state["has_gauss"], numpy_state["cached_gauss"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


def save(folder, epoch, learner, record_data):
    """checkpoint.pt: after `epoch`, the learner's model (and its average), optimizer and schedule, the run
    record so far (its max LR among it) and every random generator's state."""
    state = {"epoch": epoch, "max_lr": record_data["max_lr"], "model": learner.model.state_dict(),
             "optimizer": learner.optimizer.state_dict(), "scheduler": learner.scheduler.state_dict(),
             "record": record_data, "rng": rng_states()}
    if learner.average:
        state["average"] = learner.average.module.state_dict()
    with atomic_file(Path(folder) / CHECKPOINT) as file:
        torch.save(state, file)


def find(resume, output_dir, name):
    """The checkpoint `--training.resume` names: a path, or 'auto' for the run folder's (or the newest)."""
    if resume != "auto":
        path = Path(resume)
        path = path / CHECKPOINT if path.is_dir() else path
    elif name:
        path = inside(output_dir, name, "output.name") / CHECKPOINT
    else:
        found = sorted(Path(output_dir).glob(f"*/{CHECKPOINT}"), key=lambda p: p.stat().st_mtime)
        path = found[-1] if found else Path(output_dir) / "*" / CHECKPOINT
    if not path.is_file():
        raise UserError(f"no checkpoint to resume from at {path}")
    return path


# A resume keeps every setting that shapes what is trained (config.py's kinds); the others (speed, places,
# reports) may change. data.path may move, but the data set it holds must be the one the run started on.
KEPT_ON_RESUME = settings_of_kind("sweep", "training")


def _flat(config):
    return {f"{section}.{key}": value for section, values in config.items() for key, value in values.items()}


def load(path, config, dataset_sha256):
    """Read a checkpoint and check that it belongs to a run with the same recipe and data set."""
    try:
        # weights_only: tensors and plain containers only; any other pickled object is refused, not run.
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved = _flat(state["record"]["config"])
        saved_sha256 = state["record"]["data"]["sha256"]
    except Exception as error:  # torch raises many kinds on a damaged file
        if isinstance(error, pickle.UnpicklingError) and "Weights only load failed" in str(error):
            raise UserError(f"checkpoint {path} holds objects other than tensors and plain values, "
                            f"which could run code when loaded: refusing to load it") from None
        reason = (str(error).strip().splitlines() or [""])[0]
        raise UserError(f"cannot read checkpoint {path} ({type(error).__name__}: {reason})") from None
    wanted = _flat(config)
    changed = sorted(key for key in KEPT_ON_RESUME if wanted.get(key) != saved.get(key))
    if changed:
        raise UserError(f"checkpoint {path} was made with other settings: "
                        + ", ".join(f"{key}={saved.get(key)!r} (now {wanted.get(key)!r})" for key in changed))
    if saved_sha256 != dataset_sha256:
        raise UserError(f"checkpoint {path} was made on another data set: the .beton files' sha256s differ "
                        f"from those it recorded; resume with the data it started on")
    return state


def restore(state, model, optimizer, scheduler, average=None):
    model.load_state_dict(state["model"])
    if average:
        average.module.load_state_dict(state["average"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_states(state["rng"])
