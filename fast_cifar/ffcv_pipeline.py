"""FFCV's loader as the kit builds it: the pipelines in two short functions, and the two steps FFCV
lacks, each a thin FFCV operation around code shared with the device loader.

Per batch, on the CPU, in FFCV's numba threads: decode raw uint8 HWC -> `CropAndFlip` (the crop, flip
and cutout `augment.draw_crops` draws from (seed, epoch, sample index), by augment.py's numba kernel);
then, as torch ops: to tensor -> to the device, waiting for the copy -> channels-last NCHW view ->
`NormalizeStep` (data.py's `Normalize`, into the compute dtype). data.py imports this module only for
`--data.loader ffcv`: importing ffcv takes seconds.
"""
import contextlib
import dataclasses
import queue

import numba
import numpy as np
import torch
from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
from ffcv.loader import Loader, OrderOption
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.operation import Operation
from ffcv.transforms import Squeeze, ToDevice, ToTensor, ToTorchImage

from fast_cifar import TORCH_THREADS
from fast_cifar.augment import Augmentation, crop_and_flip_images, draw_crops
from fast_cifar.beton import read_labels
from fast_cifar.data import Normalize

torch.set_num_threads(TORCH_THREADS)  # importing ffcv set it to 1: see fast_cifar/__init__.py


def make_ffcv_loader(info, split, batches, sampling, indices, threads):
    """`EpochLoader` over one split (data.py's `make_loader` decides the shard and the subset)."""
    train = sampling.train
    return EpochLoader(
        info.path(split),
        batches.device,
        batch_size=batches.size,
        num_workers=min(threads, numba.config.NUMBA_NUM_THREADS),  # numba refuses more threads than cores
        order=OrderOption.RANDOM if train else OrderOption.SEQUENTIAL,
        drop_last=train,
        seed=sampling.seed,
        indices=indices,
        distributed=train and sampling.shard[1] > 1,  # FFCV shards with torch's DistributedSampler
        pipelines={"image": image_pipeline(info, batches, sampling), "label": label_pipeline(batches)},
    )


def image_pipeline(info, batches, sampling):
    """Decode, crop, flip and cutout (when `sampling.train`), then uint8 to the device and normalize there.

    The transfer waits for its copy (unless `batches.async_copy`): FFCV writes each batch into one of a
    few pinned host buffers and only makes the GPU, not its own CPU threads, wait before reusing one,
    so with a GPU running batches behind, an asynchronous copy can read a buffer already refilled with
    a later batch. The wait runs in FFCV's loader thread, not in the training loop.
    """
    pipeline = [SimpleRGBImageDecoder()]
    if sampling.train:  # the mean colour fills the gap and the cutout: zero once normalized
        pipeline.append(CropAndFlip(info.fill, sampling.seed, sampling.augmentation))
    return pipeline + [ToTensor(), ToDevice(batches.device, batches.async_copy),
                       ToTorchImage(channels_last=batches.channels_last),
                       NormalizeStep(Normalize(info.mean, info.std, batches.dtype, batches.device))]


def label_pipeline(batches):
    """Labels as int64 on the device; the transfer waits for its copy, as in `image_pipeline`."""
    return [IntDecoder(), ToTensor(), ToDevice(batches.device, batches.async_copy), Squeeze(1)]


class EpochLoader(Loader):
    """FFCV's Loader, plus two things it does not do by itself: it tells `CropAndFlip` which epoch each
    pass serves, and it says which labels that pass should deliver (`expected_labels`, for `SampleCheck`)."""

    def __init__(self, path, device, **loader_args):
        super().__init__(str(path), **loader_args)
        torch.set_num_threads(TORCH_THREADS)  # FFCV set torch's count to its workers': training keeps its own
        self.device, self.split_labels = device, read_labels(path)
        self.augmentations = [operation for spec in self.pipeline_specs.values() for operation in spec.transforms
                              if isinstance(operation, CropAndFlip)]

    def expected_labels(self):
        """The labels of the next pass, in the order FFCV will read its samples."""
        return self.split_labels[self.next_traversal_order()[:len(self) * self.batch_size]]

    def __iter__(self):
        for augmentation in self.augmentations:
            augmentation.epoch = self.next_epoch
        epoch = super().__iter__()  # FFCV's EpochIterator: a thread that fills batches ahead
        torch.set_num_threads(TORCH_THREADS)  # as in __init__: FFCV set it again for this pass
        try:
            yield from epoch
        finally:  # at the epoch's end, or when the consumer stops early (closing this generator)
            stop_filling(epoch)


def stop_filling(epoch):
    """Stop an epoch's filling thread and wait for it. FFCV leaves it running when a consumer stops early: a
    daemon thread, which the interpreter's exit can kill in the middle of numba's parallel code, aborting the
    process. With no batches left to fill (FFCV 1.0.2's `iter_ixes`), it finishes the one in hand and ends
    the epoch, putting an end mark on its queue: drained here, so that no put waits for a reader."""
    epoch.terminate_event.set()
    epoch.iter_ixes = iter(())
    while epoch.is_alive():
        with contextlib.suppress(queue.Empty):
            epoch.output_queue.get_nowait()
        epoch.join(timeout=0.05)


class CropAndFlip(Operation):
    """Crops, flips and cuts out a decoded uint8 NHWC batch as `draw_crops` says.

    Why not FFCV's RandomTranslate and RandomHorizontalFlip: they draw from numba's per-thread
    random states, which the loader's seed never sets. Why a Python step around a numba kernel
    rather than a step inside FFCV's compiled stage: the draw needs the epoch, which compiled FFCV code
    cannot see; `EpochLoader` sets `epoch` before each pass. The kernel is numba's, cached on disk.
    """

    def __init__(self, fill, seed, augmentation=Augmentation()):
        super().__init__()
        self.fill, self.seed, self.augmentation = np.array(fill, dtype=np.uint8), seed, augmentation
        self.epoch = 0

    def generate_code(self):
        def crop_and_flip_batch(images, out, indices):
            c = draw_crops(self.seed, self.epoch, indices, self.augmentation, images.shape[1])
            out = out[:len(images)]
            crop_and_flip_images(images, out, c.dy, c.dx, c.flip, c.cy, c.cx, c.cutout, self.fill)
            return out

        crop_and_flip_batch.with_indices = True
        return crop_and_flip_batch

    def declare_state_and_memory(self, previous_state):
        return (dataclasses.replace(previous_state, jit_mode=False),
                AllocationQuery(previous_state.shape, previous_state.dtype))


class NormalizeStep(Operation):
    """data.py's `Normalize` as the last step of FFCV's pipeline. Not FFCV's own NormalizeImage: on a GPU
    it needs cupy, it writes float16 or float32 only, never bf16, and as a compiled step it cannot follow
    `CropAndFlip` (FFCV 1.0.2's stage grouping loops forever on a compiled step after a Python one)."""

    def __init__(self, normalize):
        super().__init__()
        self.normalize = normalize

    def generate_code(self):
        return lambda images, _: self.normalize(images)

    def declare_state_and_memory(self, previous_state):
        return dataclasses.replace(previous_state, jit_mode=False, dtype=self.normalize.table.dtype), None
