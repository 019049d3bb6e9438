"""Each training image's crop, flip and cutout: one draw, two executors.

The draw: a sample's random crop (a shift of up to `CROP_PADDING` pixels each way, the gap filled with
the data set's mean colour), horizontal flip and cutout square (optional, filled with the mean colour too)
are a function of (seed, epoch, sample index) alone, `draw_crops`, hashed with splitmix64, so no random
state, thread or batch composition can change them.
The executors: ffcv_pipeline.py's `pixel_pass`, a numba kernel inside FFCV's compiled stage, and
`augment_on_device`, one gather on the device for `DeviceLoader`. Both apply what `draw_crops` draws, and
both loaders visit the samples in the same order, so a seed gives bit-identical batches on either loader.
(numba is imported by ffcv_pipeline.py alone: a run on the device loader never loads it.)
"""
import dataclasses

import numpy as np
import torch

CROP_PADDING = 4
SHIFTS = 2 * CROP_PADDING + 1  # -4..4 on each axis
CHOICES = 2 * SHIFTS * SHIFTS  # 162: every shift on both axes, mirrored or not
FIRST_FLIP_KEY = 2**63  # hashed in place of the epoch for an alternating flip's first choice: no epoch's key

# splitmix64's constants (Steele, Lea and Flood, 2014): the golden-ratio increment and the two multipliers
# of its finalizer, under which each output bit depends on every input bit.
_INCREMENT, _MULTIPLY_1, _MULTIPLY_2 = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9),
                                       np.uint64(0x94D049BB133111EB))


def splitmix64(values):
    """splitmix64 over a uint64 array (arithmetic wraps modulo 2**64): a bijection that scatters neighbouring
    inputs over the whole range."""
    z = values + _INCREMENT
    z = (z ^ (z >> np.uint64(30))) * _MULTIPLY_1
    z = (z ^ (z >> np.uint64(27))) * _MULTIPLY_2
    return z ^ (z >> np.uint64(31))


def sample_hashes(seed, epoch, indices):
    """A 64-bit hash per sample index, a new one each epoch: the key of (seed, epoch) mixed with the index."""
    key = splitmix64(splitmix64(np.array([seed], dtype=np.uint64)) ^ np.uint64(epoch))
    return splitmix64(key ^ np.asarray(indices).astype(np.uint64))


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """What the draw adds to the random crop: `flip` "random" (each epoch a new coin) or "alternating" (a
    random first choice per image, mirrored in every other epoch after it, so each image is seen both ways
    every two epochs: airbench's variant), and a `cutout` square of that many pixels a side (0: none)."""
    flip: str = "random"
    cutout: int = 0


@dataclasses.dataclass
class Crops:
    """Per sample: the shift (`dy`, `dx`, in -CROP_PADDING..CROP_PADDING), whether it is mirrored, and the
    top-left corner (`cy`, `cx`) of its cutout square of side `cutout` (0: none), in output pixels."""
    dy: np.ndarray
    dx: np.ndarray
    flip: np.ndarray
    cy: np.ndarray
    cx: np.ndarray
    cutout: int = 0


def draw_crops(seed, epoch, indices, augmentation=Augmentation(), size=32):
    """Each sample's crop, flip and cutout, uniform over their choices and independent between samples and
    epochs.

    The hash's low 32 bits, mapped onto 0..161 by a multiply and shift (uniform to within 162 / 2**32,
    where a modulo would favour some choices), give flip, dy and dx; its high 32 bits, two 16-bit halves
    mapped the same way, give the cutout's corner, so that the square lies inside the image. An
    alternating flip is the first bit of an epoch-independent hash, inverted in odd epochs.
    """
    hashes = sample_hashes(seed, epoch, indices)
    choice = multiply_shift(hashes & np.uint64(0xFFFFFFFF), CHOICES, 32)
    shift = choice % (SHIFTS * SHIFTS)
    flip = choice >= SHIFTS * SHIFTS
    if augmentation.flip == "alternating":
        first = (sample_hashes(seed, FIRST_FLIP_KEY, indices) >> np.uint64(63)).astype(bool)
        flip = first ^ bool(epoch % 2)
    corners = size - augmentation.cutout + 1
    cy = multiply_shift((hashes >> np.uint64(32)) & np.uint64(0xFFFF), corners, 16)
    cx = multiply_shift(hashes >> np.uint64(48), corners, 16)
    return Crops(dy=shift // SHIFTS - CROP_PADDING, dx=shift % SHIFTS - CROP_PADDING, flip=flip, cy=cy, cx=cx,
                 cutout=augmentation.cutout)


def multiply_shift(bits, choices, width):
    """`width`-bit values mapped onto 0..choices-1, as evenly as `width` bits allow."""
    return ((bits * np.uint64(choices)) >> np.uint64(width)).astype(np.int64)


# --- the device's executor ------------------------------------------------------------------------


def augment_on_device(padded, index, crops, fill):
    """The device executor: images `index` of a batch padded by CROP_PADDING, cropped and flipped by `crops`
    (device tensors), as one gather, then the cutout squares set to `fill`.

    Output pixel (r, c) is padded pixel (pad + dy + r, pad + dx + c), or column (pad + dx + 31 - c) when
    flipped: what ffcv_pipeline.py's `pixel_pass` computes, since padding with the fill colour is what falls outside
    the image.
    """
    size = padded.shape[1] - 2 * CROP_PADDING
    steps = torch.arange(size, device=padded.device)
    rows = (CROP_PADDING + crops.dy)[:, None] + steps
    cols = (CROP_PADDING + crops.dx)[:, None] + torch.where(crops.flip[:, None], size - 1 - steps, steps)
    images = padded[index[:, None, None], rows[:, :, None], cols[:, None, :]]
    if not crops.cutout:
        return images
    in_rows = (steps >= crops.cy[:, None]) & (steps < crops.cy[:, None] + crops.cutout)
    in_cols = (steps >= crops.cx[:, None]) & (steps < crops.cx[:, None] + crops.cutout)
    return torch.where((in_rows[:, :, None] & in_cols[:, None, :])[..., None], fill, images)


def pad_with(images, fill):
    """uint8 NHWC images padded by CROP_PADDING on each side with the `fill` colour, for `augment_on_device`."""
    pad = CROP_PADDING
    padded = fill.expand(len(images), images.shape[1] + 2 * pad, images.shape[2] + 2 * pad, 3).clone()
    padded[:, pad:-pad, pad:-pad] = images
    return padded
