"""FFCV's loader as the kit builds it: the pipelines in two short functions, and the step FFCV lacks,
`PixelPass`.

Per batch, in FFCV's threads: decode raw uint8 HWC (FFCV's compiled stage) -> `pixel_pass`, one numba
kernel: the crop, flip and cutout `augment.draw_crops` draws from (seed, epoch, sample index), and each
pixel looked up in a table, its normalized value in the compute dtype on a CPU, itself on a GPU. Then, as
torch ops: on a CPU, a channels-last NCHW view of FFCV's buffer, nothing copied; on a GPU, to the device,
waiting for the copy -> channels-last NCHW view -> `Normalize` there (uint8 travels, 4x fewer bytes than
float32). data.py imports this module only for `--data.loader ffcv`: importing ffcv takes seconds.
"""
import contextlib
import dataclasses
import queue

import numba
import numpy as np
import torch

from fast_cifar.compute import TORCH_THREADS  # recorded before ffcv's import sets it to 1: see compute.py
from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
from ffcv.loader import Loader, OrderOption
from ffcv.loader.epoch_iterator import EpochIterator
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.operation import Operation
from ffcv.transforms import Squeeze, ToDevice, ToTensor, ToTorchImage

from fast_cifar.augment import Augmentation, draw_crops
from fast_cifar.beton import read_labels
from fast_cifar.normalize import Normalize, normalization_table

torch.set_num_threads(TORCH_THREADS)  # importing ffcv set it to 1: see compute.py


def make_ffcv_loader(info, split, batch_format, sampling, indices, threads):
    """`EpochLoader` over one split (data.py's `make_loader` decides the shard and the subset)."""
    train = sampling.train
    return EpochLoader(
        info.path(split),
        batch_format.device,
        batch_size=batch_format.size,
        num_workers=min(threads, numba.config.NUMBA_NUM_THREADS),  # numba refuses more threads than cores
        order=OrderOption.RANDOM if train else OrderOption.SEQUENTIAL,
        drop_last=train,
        seed=sampling.seed,
        indices=indices,
        distributed=train and sampling.shard[1] > 1,  # FFCV shards with torch's DistributedSampler
        pipelines={"image": image_pipeline(info, batch_format, sampling), "label": label_pipeline(batch_format)},
    )


def image_pipeline(info, batch_format, sampling):
    """Decode, then one pass: crop, flip and cutout (when `sampling.train`), and on a CPU the normalization;
    on a GPU, to the device, normalizing there.

    Where normalization runs is measured (benchmarks/results/loader_steps_cpu): on a CPU, the lookup inside
    the numba pass adds a tenth of what the same lookup adds as a torch op afterwards. On a GPU, uint8
    crosses the bus and the GPU normalizes it.

    The transfer waits for its copy: FFCV writes each batch into one of a
    few pinned host buffers and only makes the GPU, not its own CPU threads, wait before reusing one,
    so with a GPU running batches behind, an asynchronous copy can read a buffer already refilled with
    a later batch. The wait runs in FFCV's loader thread, not in the training loop.
    """
    on_cpu = batch_format.device.type == "cpu"
    pipeline = [SimpleRGBImageDecoder()]
    if sampling.train or on_cpu:
        table = normalization_table(info.mean, info.std, batch_format.dtype) if on_cpu else None
        pipeline.append(PixelPass(info.fill, sampling, table))
    to_image = ToTorchImage(channels_last=batch_format.channels_last)
    if on_cpu:  # FFCV's own buffers hold the batches: no copy
        return pipeline + [ToTensor(), ViewAs(batch_format.dtype), to_image]
    return pipeline + [ToTensor(), ToDevice(batch_format.device, non_blocking=False), to_image,
                       NormalizeStep(Normalize(info.mean, info.std, batch_format.dtype, batch_format.device))]


def label_pipeline(batch_format):
    """Labels as int64 on the device; the transfer waits for its copy, as in `image_pipeline`."""
    return [IntDecoder(), ToTensor(), ToDevice(batch_format.device, non_blocking=False), Squeeze(1)]


class EpochLoader(Loader):
    """FFCV's Loader, plus what it does not do by itself: it tells `PixelPass` which epoch each pass serves,
    it says which labels that pass should deliver (`expected_labels`, for `SampleCheck`), and a step that
    fails raises its error in the consumer (`FillingThread`) instead of leaving it waiting."""

    def __init__(self, path, device, **loader_args):
        super().__init__(str(path), **loader_args)
        torch.set_num_threads(TORCH_THREADS)  # FFCV set torch's count to its workers': training keeps its own
        self.device, self.split_labels = device, read_labels(path)
        self.pixel_passes = [operation for spec in self.pipeline_specs.values() for operation in spec.transforms
                             if isinstance(operation, PixelPass)]

    @property
    def shard_size(self):
        """How many samples a pass goes through, a partial last batch included. (For a training loader over
        several processes, FFCV shards inside: not counted here.)"""
        return len(self.indices)

    def expected_labels(self):
        """The labels of the next pass, in the order FFCV will read its samples."""
        return self.split_labels[self.next_traversal_order()[:len(self) * self.batch_size]]

    def __iter__(self):
        """FFCV's Loader.__iter__, with a `FillingThread` for its EpochIterator."""
        for pixel_pass in self.pixel_passes:
            pixel_pass.epoch = self.next_epoch
        Compiler.set_num_threads(self.num_workers)
        order = self.next_traversal_order()[:len(self) * self.batch_size]
        self.next_epoch += 1
        epoch = FillingThread(self, order)  # the code was generated when the loader was built
        torch.set_num_threads(TORCH_THREADS)  # FFCV set it again for this pass
        try:
            yield from epoch
        finally:  # at the epoch's end, or when the consumer stops early (closing this generator)
            stop_filling(epoch)
        if epoch.failure is not None:
            raise epoch.failure


class FillingThread(EpochIterator):
    """FFCV's EpochIterator, the thread that fills batches ahead, except that when a step fails it keeps the
    error and ends the epoch, for `EpochLoader` to raise; FFCV's own thread dies and leaves the consumer
    waiting for a batch forever."""
    failure = None

    def run(self):
        try:
            super().run()
        except BaseException as error:  # noqa: B036 - whatever stopped the thread, the consumer must hear of it
            self.failure = error
            self.output_queue.put(None)  # FFCV's end mark: the consumer's next() ends the epoch


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


class PixelPass(Operation):
    """A decoded uint8 NHWC batch cropped, flipped and cut out as `draw_crops` says (train split), each pixel
    then looked up in `table` (256 x 3: normalized values in the compute dtype; None: uint8 unchanged), by
    one numba kernel, `pixel_pass`, cached on disk.

    Why not FFCV's RandomTranslate and RandomHorizontalFlip: they draw from numba's per-thread random states,
    which the loader's seed never sets. Why a Python step around the kernel rather than a step inside
    FFCV's compiled stage: the draw needs the epoch, which `EpochLoader` sets before each pass, and a
    compiled step is compiled anew in every process, where the kernel alone loads from numba's cache. The
    whole pass, Python step included, adds 1.3 ms to a CPU batch of 512 (benchmarks/results/loader_steps_cpu).
    """

    def __init__(self, fill, sampling, table=None):
        super().__init__()
        self.seed, self.augmentation = sampling.seed, sampling.augmentation if sampling.train else Augmentation()
        self.train = sampling.train
        self.fill = np.array(fill, dtype=np.uint8)
        self.table = np.arange(256, dtype=np.uint8)[:, None].repeat(3, 1) if table is None else as_numpy(table)
        self.epoch = 0

    def generate_code(self):
        def pass_over_batch(images, out, indices):
            crops = np.zeros((len(images), 5), dtype=np.int64)  # the test split's: as it is
            if self.train:
                c = draw_crops(self.seed, self.epoch, indices, self.augmentation, images.shape[1])
                crops = np.stack([c.dy, c.dx, c.flip, c.cy, c.cx], axis=1)
            out = out[:len(images)]
            pixel_pass(images, out, crops, self.table, self.fill, self.augmentation.cutout)
            return out

        pass_over_batch.with_indices = True
        return pass_over_batch

    def declare_state_and_memory(self, previous_state):
        return (dataclasses.replace(previous_state, jit_mode=False, dtype=self.table.dtype),
                AllocationQuery(previous_state.shape, self.table.dtype))


def as_numpy(table):
    """A torch table as numpy holds it: bfloat16, which numpy lacks, as its bits (uint16; `ViewAs` turns the
    batch back into bfloat16)."""
    return (table.view(torch.uint16) if table.dtype == torch.bfloat16 else table).numpy()


@numba.njit(parallel=True, nogil=True, cache=True)
def pixel_pass(images, out, crops, table, fill, cutout):
    """Output pixel (r, c) of image i is input pixel (r + dy, c' + dx), c' = c or its mirror, or `fill` outside
    the image and inside the cutout square (side `cutout` at (cy, cx)), looked up in `table`; (dy, dx, flip,
    cy, cx) is row i of `crops`."""
    count, height, width, channels = images.shape
    for i in numba.prange(count):
        dy, dx, flip, cy, cx = crops[i, 0], crops[i, 1], crops[i, 2], crops[i, 3], crops[i, 4]
        for r in range(height):
            source_row = r + dy
            for c in range(width):
                source_col = (width - 1 - c if flip else c) + dx
                inside = 0 <= source_row < height and 0 <= source_col < width
                if cy <= r < cy + cutout and cx <= c < cx + cutout:
                    inside = False
                for k in range(channels):
                    out[i, r, c, k] = table[images[i, source_row, source_col, k] if inside else fill[k], k]


class ViewAs(Operation):
    """The batch's bits read as `dtype`: bfloat16 from the uint16 `pixel_pass` wrote; otherwise a no-op."""

    def __init__(self, dtype):
        super().__init__()
        self.dtype = dtype

    def generate_code(self):
        return lambda images, _: images.view(self.dtype)

    def declare_state_and_memory(self, previous_state):
        return dataclasses.replace(previous_state, jit_mode=False, dtype=self.dtype), None


class NormalizeStep(Operation):
    """`Normalize` as the last step of FFCV's pipeline on a GPU, after the transfer. Not FFCV's own
    NormalizeImage: on a GPU it needs cupy, and it writes float16 or float32 only, never bf16."""

    def __init__(self, normalize):
        super().__init__()
        self.normalize = normalize

    def generate_code(self):
        return lambda images, _: self.normalize(images)

    def declare_state_and_memory(self, previous_state):
        return dataclasses.replace(previous_state, jit_mode=False, dtype=self.normalize.table.dtype), None
