"""A run's folder: created under output.dir, locked while the run lasts, never taken over silently."""
import datetime
import itertools
from pathlib import Path

from fast_cifar.errors import UserError
from fast_cifar.files import inside, lock_folder, writable_folder


# What a run writes into its folder; `--output.overwrite true` clears these first.
RUN_FILES = ("results.json", "checkpoint.pt", "model.pt", "loss_accuracy_plots.png", "lr_finder.png", "profile.txt",
             "kernels.md")


def make_run_folder(parent, name="", overwrite=False):
    """Create the run folder and lock it for this process's life; never take over an earlier run's folder.

    Returns the folder and the open lock file (keep it: closing it releases the lock).
    """
    if not name:  # date and time, with a suffix if a run started in the same second
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        name = next(f"{stamp}-{n}" if n > 1 else stamp for n in itertools.count(1)
                    if not (Path(parent) / (f"{stamp}-{n}" if n > 1 else stamp)).exists())
    folder = writable_folder(inside(parent, name, "output.name"))
    lock = lock_folder(folder)
    earlier = [file for file in RUN_FILES if (folder / file).exists()]
    if earlier and not overwrite:
        lock.close()
        raise UserError(f"{folder} already holds a run ({', '.join(earlier)}): continue it with "
                        f"--training.resume {folder}, pick another --output.name, or replace it with "
                        f"--output.overwrite true")
    for file in earlier:
        (folder / file).unlink()
    return folder, lock
