import io
import pickle
import re
import struct
import tarfile
import urllib.error
import zlib

import numpy as np
import pytest
from PIL import Image

from fast_cifar import sources
from fast_cifar.errors import UserError
from fast_cifar.sources import load_source, make_synthetic

from helpers import RunsCode


def write_image_folder(root, splits, suffix=".png"):
    for name, split in splits.items():
        for index, (image, label) in enumerate(zip(split.images, split.labels)):
            folder = root / name / split.classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{index:04d}{suffix}")


def write_torchvision_folder(folder, splits, protocol=2):
    """The layout of torchvision's cifar-10-batches-py: pickled dicts of CHW rows (protocol 2, as shipped)."""
    folder.mkdir(parents=True)
    train, test = splits["train"], splits["test"]
    rows = lambda images: images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # noqa: E731
    chunks = np.array_split(np.arange(len(train.labels)), 5)
    for number, chunk in enumerate(chunks, start=1):
        batch = {"data": rows(train.images[chunk]), "labels": train.labels[chunk].tolist()}
        (folder / f"data_batch_{number}").write_bytes(pickle.dumps(batch, protocol))
    (folder / "test_batch").write_bytes(pickle.dumps({"data": rows(test.images), "labels": test.labels.tolist()}, protocol))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": train.classes}, protocol))


def assert_same_splits(found, expected, exact=True):
    for name in ("train", "test"):
        assert found[name].images.shape == expected[name].images.shape
        assert found[name].images.dtype == np.uint8
        assert found[name].classes == expected[name].classes
        if exact:
            np.testing.assert_array_equal(found[name].images, expected[name].images)
            np.testing.assert_array_equal(found[name].labels, expected[name].labels)


@pytest.fixture
def small():
    return make_synthetic(50, 20)


def test_synthetic_is_balanced_and_deterministic():
    first, second = make_synthetic(100, 40), make_synthetic(100, 40)
    np.testing.assert_array_equal(first["train"].images, second["train"].images)
    assert np.bincount(first["train"].labels).tolist() == [10] * 10
    assert first["test"].images.shape == (40, 32, 32, 3)


@pytest.mark.parametrize("protocol", [2, 5])
def test_torchvision_folder_and_archive(small, tmp_path, protocol):
    folder = tmp_path / "cifar-10-batches-py"
    write_torchvision_folder(folder, small, protocol)
    for path in (folder, tmp_path):  # the folder itself or its parent
        splits, description = load_source(str(path))
        assert "torchvision" in description
        assert_same_splits(splits, small)

    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    splits, _ = load_source(str(archive))
    assert_same_splits(splits, small)


def test_image_folder_and_archive_sorted_by_class(tmp_path):
    # One image per (split, class) in label order, so sorting by class keeps the order.
    splits = make_synthetic(10, 10)
    for split in splits.values():
        order = np.argsort(split.labels)
        split.images, split.labels = split.images[order], split.labels[order]
    write_image_folder(tmp_path / "pngs", splits)
    found, description = load_source(str(tmp_path / "pngs"))
    assert "image folder" in description
    assert_same_splits(found, splits)  # PNG is lossless: exact pixels

    archive = tmp_path / "pngs.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "pngs", arcname="copy")
    found, _ = load_source(str(archive))
    assert_same_splits(found, splits)


@pytest.mark.slow  # cuts the small archive out of the whole copy: seconds
def test_real_subset_of_offline_copy(real_subset_archive):
    splits, _ = load_source(str(real_subset_archive))
    assert splits["train"].classes[:3] == ["airplane", "automobile", "bird"]
    assert len(splits["train"].labels) == 1000 and len(splits["test"].labels) == 200
    assert np.bincount(splits["test"].labels).tolist() == [20] * 10
    assert 80 < splits["train"].images.mean() < 160  # real photos, not blank


def test_download_failure_says_how_to_use_a_local_copy(monkeypatch, tmp_path):
    import torchvision

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(UserError, match="--data.source PATH.*cifar-10-batches-py.*<root>/{train,test}/<class>"):
        sources.load_source("download", cache_dir=tmp_path)


@pytest.mark.parametrize("problem", ["missing", "not_an_archive", "corrupt_archive", "wrong_size",
                                     "classes_differ", "empty", "bad_image"])
def test_bad_sources_give_one_clear_error(problem, tmp_path, small):
    path = tmp_path / "source"
    if problem == "not_an_archive":
        path.write_text("hello")
    elif problem == "corrupt_archive":
        write_image_folder(tmp_path / "pngs", small)
        with tarfile.open(path, "w:gz") as tar:
            tar.add(tmp_path / "pngs", arcname="copy")
        path.write_bytes(path.read_bytes()[:2000])
    elif problem == "wrong_size":
        write_image_folder(path, small)
        Image.new("RGB", (64, 64)).save(path / "train" / "class_0" / "big.png")
    elif problem == "classes_differ":
        write_image_folder(path, small)
        (path / "test" / "class_3").rename(path / "test" / "class_x")
    elif problem == "empty":
        path.mkdir()
    elif problem == "bad_image":
        write_image_folder(path, small)
        (path / "test" / "class_1" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError) as error:
        load_source(str(path))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("member", ["batches.meta", "data_batch_1"])
@pytest.mark.parametrize("packed", [False, True])
def test_torchvision_batches_that_would_run_code_are_refused(small, tmp_path, member, packed):
    folder = tmp_path / "cifar-10-batches-py"
    write_torchvision_folder(folder, small)
    marker = tmp_path / "code-ran"
    (folder / member).write_bytes(pickle.dumps({"label_names": RunsCode(marker), "data": RunsCode(marker)}))
    source = folder
    if packed:
        source = tmp_path / "cifar-10-python.tar.gz"
        with tarfile.open(source, "w:gz") as tar:
            tar.add(folder, arcname="cifar-10-batches-py")
    with pytest.raises(UserError, match=f"refusing to read {member}: it refers to posix.system") as error:
        load_source(str(source))
    assert "\n" not in str(error.value)
    assert not marker.exists()


def test_tar_cut_short_at_a_member_boundary_is_refused(small, tmp_path):
    write_image_folder(tmp_path / "pngs", small)
    archive = tmp_path / "copy.tar"
    with tarfile.open(archive, "w") as tar:  # uncompressed: a cut leaves a readable prefix
        tar.add(tmp_path / "pngs", arcname="copy")
    assert len(load_source(str(archive))[0]["train"].labels) == 50  # whole, it reads
    with tarfile.open(archive) as tar:
        cut_at = tar.getmembers()[-3].offset  # the start of a member's header
    archive.write_bytes(archive.read_bytes()[:cut_at])
    with pytest.raises(UserError, match="cut short: it ends without tar's end-of-archive marker"):
        load_source(str(archive))


def test_16_bit_grayscale_png_is_scaled_not_clipped(tmp_path):
    gray = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 64  # 0 .. 65472
    path = tmp_path / "gray16.png"
    Image.fromarray(gray).save(path)
    assert Image.open(path).mode.startswith("I")  # PIL reads it as 16/32-bit integers
    image = sources.decode_image(path.read_bytes(), path.name)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[..., 0], np.round(gray / 257).astype(np.uint8))
    np.testing.assert_array_equal(image[..., 0], image[..., 2])
    assert 0 < image.mean() < 255


def png_declaring(width, height):
    """A PNG header declaring width x height pixels, with no real pixel data: a few dozen bytes."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("width, height", [(30_000, 30_000), (64, 64)])
def test_an_oversized_image_is_refused_from_its_header(tmp_path, small, width, height, monkeypatch):
    write_image_folder(tmp_path / "copy", small)
    (tmp_path / "copy" / "train" / "class_0" / "huge.png").write_bytes(png_declaring(width, height))
    decoded = []
    monkeypatch.setattr(sources, "_to_rgb", lambda image, name: decoded.append(name) or np.asarray(image))
    with pytest.raises(UserError, match=rf"image train/class_0/huge.png .*{width}.*32x32") as error:
        load_source(str(tmp_path / "copy"))
    assert "\n" not in str(error.value)
    assert "train/class_0/huge.png" not in decoded  # refused before decoding


def archive_with(tmp_path, small, add):
    write_image_folder(tmp_path / "pngs", small)
    path = tmp_path / "copy.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(tmp_path / "pngs", arcname="copy")
        add(tar)
    return path


def member(name, kind=tarfile.REGTYPE, data=b"", link=""):
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, len(data), link
    return info, io.BytesIO(data) if data else None


@pytest.mark.parametrize("kind, name, link, message", [
    (tarfile.SYMTYPE, "copy/train/class_0/link.png", "/etc/passwd", "is a symbolic link"),
    (tarfile.LNKTYPE, "copy/train/class_0/hard.png", "copy/train/class_0/0000.png", "is a hard link"),
    (tarfile.CHRTYPE, "copy/train/class_0/dev.png", "", "is a device file"),
    (tarfile.REGTYPE, "/copy/train/class_0/absolute.png", "", "points outside"),
    (tarfile.REGTYPE, "copy/../train/class_0/up.png", "", "points outside"),
])
def test_archive_members_that_point_elsewhere_are_refused(tmp_path, small, kind, name, link, message):
    data = (tmp_path / "one.png")
    Image.new("RGB", (32, 32)).save(data)
    path = archive_with(tmp_path, small, lambda tar: tar.addfile(*member(
        name, kind, data.read_bytes() if kind == tarfile.REGTYPE else b"", link)))
    with pytest.raises(UserError, match=rf"refusing the archive member {re.escape(name)}: .*{message}"):
        load_source(str(path))


def test_a_link_in_an_image_folder_is_refused(tmp_path, small):
    write_image_folder(tmp_path / "copy", small)
    (tmp_path / "copy" / "train" / "class_0" / "link.png").symlink_to(tmp_path / "copy" / "test" / "class_0" / "0000.png")
    with pytest.raises(UserError, match="link.png: it is a symbolic link"):
        load_source(str(tmp_path / "copy"))
