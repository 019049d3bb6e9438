"""fast_cifar: train ResNet-18 on CIFAR-10 as fast as the hardware allows, and see where the time goes.

One file per concern: sources.py and beton.py (data set to .beton), data.py (FFCV
loaders), model.py (ResNet-18), lr_finder.py, train.py (the loop), results.py
(what a run writes), config.py (every setting).
"""
__version__ = "0.1.0"
