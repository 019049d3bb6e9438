"""Shared test data: a synthetic data set, the offline CIFAR-10 copy and a small real subset of it."""
import io
import tarfile

import pytest

import fast_cifar.compute  # noqa: F401  first: it records torch's thread count before a test module imports ffcv
from fast_cifar.beton import write_dataset
from fast_cifar.sources import load_source, make_synthetic

from helpers import OFFLINE_COPY

SMALL = dict(width=8, train=512, test=200)


@pytest.fixture(scope="session")
def offline_copy():
    if OFFLINE_COPY is None or not OFFLINE_COPY.exists():
        pytest.skip("no CIFAR-10 copy: set FAST_CIFAR_COPY to one (e.g. cifar10-jpeg.tar.gz) to run this test"
                    + (f"; {OFFLINE_COPY} does not exist" if OFFLINE_COPY else ""))
    return OFFLINE_COPY


@pytest.fixture(scope="session")
def synthetic_folder(tmp_path_factory):
    """train.beton/test.beton/dataset.json of a small learnable synthetic data set."""
    folder = tmp_path_factory.mktemp("synthetic")
    splits = make_synthetic(SMALL["train"], SMALL["test"])
    write_dataset(splits, folder, "synthetic", num_workers=2)
    return folder


@pytest.fixture(scope="session")
def real_subset_archive(offline_copy, tmp_path_factory):
    """A .tar.gz in the offline copy's layout with the first 100 train and 20 test images of each class."""
    keep = {"train": 100, "test": 20}
    path = tmp_path_factory.mktemp("real_subset") / "cifar10-small.tar.gz"
    counts = {}
    with tarfile.open(offline_copy) as source, tarfile.open(path, "w:gz") as target:
        for member in source:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 4:
                continue
            key = (parts[1], parts[2])  # (split, class)
            if counts.get(key, 0) < keep[parts[1]]:
                counts[key] = counts.get(key, 0) + 1
                target.addfile(member, io.BytesIO(source.extractfile(member).read()))
    return path


@pytest.fixture(scope="session")
def real_subset_folder(real_subset_archive, tmp_path_factory):
    """That small archive written as .beton files (1,000 train and 200 test images): real photos for runs."""
    folder = tmp_path_factory.mktemp("cifar10_subset")
    splits, description = load_source(str(real_subset_archive))
    write_dataset(splits, folder, description, num_workers=2)
    return folder
