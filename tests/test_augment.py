"""The crop, flip and cutout draw: uniform over its choices, independent between neighbours and epochs; the
alternating flip alternates. (That the two executors agree pixel for pixel: test_ffcv_pipeline.py.)"""
import numpy as np

from fast_cifar.augment import CHOICES, CROP_PADDING, SHIFTS, Augmentation, draw_crops


def chi_square(observed):
    """Pearson's statistic against a uniform spread over observed's cells, and its degrees of freedom."""
    observed = np.asarray(observed, dtype=np.float64).ravel()
    expected = observed.sum() / len(observed)
    return ((observed - expected) ** 2 / expected).sum(), len(observed) - 1


def far_above_chance(statistic, freedom):
    """More than 5 standard deviations above a chi-square's mean: not chance, for any practical purpose."""
    return statistic > freedom + 5 * np.sqrt(2 * freedom)


def choice_of(crops):
    return (crops.dy + CROP_PADDING) * SHIFTS + crops.dx + CROP_PADDING + SHIFTS * SHIFTS * crops.flip


def test_every_choice_is_equally_likely():
    crops = draw_crops(seed=0, epoch=1, indices=np.arange(CHOICES * 300))
    counts = np.bincount(choice_of(crops), minlength=CHOICES)
    assert len(counts) == CHOICES and counts.min() > 0
    assert not far_above_chance(*chi_square(counts))
    assert crops.dy.min() == crops.dx.min() == -CROP_PADDING and crops.dy.max() == crops.dx.max() == CROP_PADDING


def pair_table(first, second):
    table = np.zeros((SHIFTS, SHIFTS))
    np.add.at(table, (first + CROP_PADDING, second + CROP_PADDING), 1)
    return table


def independence_statistic(table):
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    return ((table - expected) ** 2 / expected).sum(), (table.shape[0] - 1) * (table.shape[1] - 1)


def test_neighbouring_images_draw_independently():
    # Neighbours in a batch: consecutive places in a shuffled order (200 batches of 512), and consecutive
    # sample indices, the case a weak hash of the index gets wrong.
    orders = [np.random.default_rng(seed).permutation(50_000)[:512] for seed in range(200)]
    for indices in (np.concatenate(orders), np.arange(100_000)):
        dy = draw_crops(seed=0, epoch=3, indices=indices).dy
        table = pair_table(dy[:-1], dy[1:])
        assert (table > 0).all()  # all 81 pairs of vertical shifts occur
        assert not far_above_chance(*independence_statistic(table))


def test_each_epoch_draws_anew_and_each_seed_its_own():
    indices = np.arange(50_000)
    first, second, other_seed = draw_crops(0, 1, indices), draw_crops(0, 2, indices), draw_crops(1, 1, indices)
    for other in (second, other_seed):
        assert not far_above_chance(*independence_statistic(pair_table(first.dx, other.dx)))
        assert abs(np.mean(first.flip == other.flip) - 0.5) < 0.01
    again = draw_crops(0, 1, indices)
    assert all(np.array_equal(getattr(first, key), getattr(again, key)) for key in ("dy", "dx", "flip"))


def test_the_cutout_corner_is_uniform_and_keeps_the_square_inside():
    crops = draw_crops(seed=0, epoch=2, indices=np.arange(25 * 2000), augmentation=Augmentation(cutout=8))
    for corner in (crops.cy, crops.cx):
        counts = np.bincount(corner)
        assert len(counts) == 32 - 8 + 1 and not far_above_chance(*chi_square(counts))
    # independent of the crop's shift, which the same hash's other bits give
    assert not far_above_chance(*independence_statistic(pair_table(crops.dy, crops.cy % SHIFTS - CROP_PADDING)))


def test_an_alternating_flip_mirrors_each_image_every_other_epoch():
    indices, alternating = np.arange(10_000), Augmentation(flip="alternating")
    flips = [draw_crops(0, epoch, indices, alternating).flip for epoch in range(1, 5)]
    assert all(np.array_equal(flips[e], ~flips[e + 1]) for e in range(3))
    assert abs(flips[0].mean() - 0.5) < 0.02  # a random first choice, not one side for all
    assert abs(np.mean(flips[0] == draw_crops(1, 1, indices, alternating).flip) - 0.5) < 0.02  # each seed its own
    # the shifts are the random flip's: alternating changes only the flip
    assert np.array_equal(draw_crops(0, 3, indices).dy, draw_crops(0, 3, indices, alternating).dy)
