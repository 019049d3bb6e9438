"""fast_cifar: train ResNet-18 on CIFAR-10 as fast as the hardware allows, and see where the time goes.

One file per concern: sources.py and beton.py (data set to .beton), data.py (the loaders;
ffcv_pipeline.py, FFCV's), augment.py (crop, flip, cutout), normalize.py, model.py (ResNet-18,
ResNet-9), lr_finder.py, optim.py (optimizer, schedule, weight average), train.py (the run;
compute.py picks the device, precision and loader, steps.py holds the training step and evaluation),
results.py (the run's record), run_folder.py (its folder), checkpoint.py (resuming), distributed.py
(torchrun), config.py (every setting).
"""
__version__ = "0.1.0"
