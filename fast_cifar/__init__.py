"""fast_cifar: train ResNet-18 on CIFAR-10 as fast as the hardware allows, and see where the time goes.

One file per concern: sources.py and beton.py (data set to .beton), data.py (the
loaders), model.py (ResNet-18), lr_finder.py, train.py (the loop), results.py
(what a run writes), checkpoint.py (resuming), distributed.py (torchrun),
config.py (every setting).
"""
import torch as _torch

# Importing ffcv sets torch's CPU thread count to 1 (its loaders later set it to their
# worker count). Import it here, first, and put torch's own default back, so that
# a run that never builds an FFCV loader (--data.loader gpu) keeps all its threads.
_threads = _torch.get_num_threads()
import ffcv  # noqa: E402,F401

_torch.set_num_threads(_threads)

__version__ = "0.1.0"
