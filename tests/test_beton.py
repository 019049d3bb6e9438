import json

import numpy as np
import pytest
from ffcv.fields import FloatField, IntField, RGBImageField
from ffcv.types import HeaderType
from ffcv.writer import DatasetWriter

from fast_cifar import beton
from fast_cifar.beton import INFO_FILE, channel_stats, load_dataset_info, write_dataset
from fast_cifar.errors import UserError
from fast_cifar.files import sha256
from fast_cifar.sources import Split, make_synthetic


def test_write_records_counts_checksums_and_stats(synthetic_folder):
    info = json.loads((synthetic_folder / INFO_FILE).read_text())
    assert info["splits"]["train"]["records"] == 512
    assert info["splits"]["test"]["records"] == 200
    assert info["splits"]["train"]["sha256"] == sha256(synthetic_folder / "train.beton")
    assert info["classes"] == [f"class_{i}" for i in range(10)]
    assert sorted(p.name for p in synthetic_folder.iterdir()) == ["dataset.json", "test.beton", "train.beton"]
    loaded = load_dataset_info(synthetic_folder)
    assert loaded.records == {"train": 512, "test": 200}


def test_full_offline_copy_writes_50000_and_10000(real_folder):
    info = load_dataset_info(real_folder)
    assert info.records == {"train": 50000, "test": 10000}
    assert info.classes[0] == "airplane" and info.classes[-1] == "truck"
    # CIFAR-10's published train statistics, a little shifted by the JPEG re-encoding.
    np.testing.assert_allclose(info.mean, [125.3, 123.0, 113.9], atol=1.5)
    np.testing.assert_allclose(info.std, [63.0, 62.1, 66.7], atol=2.0)


def test_channel_stats_match_numpy():
    images = np.random.default_rng(0).integers(0, 256, size=(25, 32, 32, 3), dtype=np.uint8)
    stats = channel_stats(images, chunk=7)
    pixels = images.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(stats["mean"], pixels.mean(0), atol=1e-3)
    np.testing.assert_allclose(stats["std"], pixels.std(0), atol=1e-3)


def test_empty_split_is_refused_before_writing(tmp_path):
    splits = make_synthetic(20, 10)
    splits["test"] = Split(splits["test"].images[:0], splits["test"].labels[:0], [])
    with pytest.raises(UserError, match="test split of synthetic is empty"):
        write_dataset(splits, tmp_path / "out", "synthetic")
    assert not (tmp_path / "out").exists()


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def fail_on_test_split(self, dataset, **kwargs):
        calls.append(self.fname)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C while the second file was written
        return original(self, dataset, **kwargs)

    original = DatasetWriter.from_indexed_dataset
    monkeypatch.setattr(DatasetWriter, "from_indexed_dataset", fail_on_test_split)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(make_synthetic(40, 20), tmp_path / "out", "synthetic", num_workers=1)
    assert list((tmp_path / "out").iterdir()) == []


def copy_dataset(source, target):
    target.mkdir()
    for path in source.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def write_beton(path, fields, samples):
    class Samples:
        def __len__(self):
            return len(samples)

        def __getitem__(self, index):
            return samples[index]

    DatasetWriter(str(path), fields, num_workers=1).from_indexed_dataset(Samples())


def refresh_checksum(folder, split):
    info = json.loads((folder / INFO_FILE).read_text())
    info["splits"][split]["sha256"] = sha256(folder / f"{split}.beton")
    (folder / INFO_FILE).write_text(json.dumps(info))


def no_records(folder):
    """The test split's header rewritten to claim zero records (FFCV cannot write an empty file)."""
    path = folder / "test.beton"
    header = np.fromfile(path, dtype=HeaderType, count=1)
    header["num_samples"] = 0
    path.write_bytes(header.tobytes() + path.read_bytes()[HeaderType.itemsize:])
    refresh_checksum(folder, "test")


image = np.zeros((32, 32, 3), np.uint8)
BAD_FOLDERS = {
    "no_records": no_records,
    "no_info": lambda f: (f / INFO_FILE).unlink(),
    "info_not_json": lambda f: (f / INFO_FILE).write_text("{not json"),
    "missing_beton": lambda f: (f / "test.beton").unlink(),
    "truncated": lambda f: (f / "train.beton").write_bytes((f / "train.beton").read_bytes()[:5000]),
    "flipped_byte": lambda f: (f / "train.beton").write_bytes(
        (lambda b: b[:9000] + bytes([b[9000] ^ 1]) + b[9001:])((f / "train.beton").read_bytes())),
    "garbage_header": lambda f: ((f / "test.beton").write_bytes(b"\xff" * 4096), refresh_checksum(f, "test")),
    "wrong_fields": lambda f: (write_beton(f / "test.beton", {"image": RGBImageField(), "score": FloatField()},
                                           [(image, 0.5)] * 4), refresh_checksum(f, "test")),
    "wrong_size": lambda f: (write_beton(f / "test.beton", {"image": RGBImageField(write_mode="raw"),
                                                           "label": IntField()},
                                         [(np.zeros((16, 16, 3), np.uint8), 1)] * 4), refresh_checksum(f, "test")),
    "label_out_of_range": lambda f: (write_beton(f / "test.beton", {"image": RGBImageField(write_mode="raw"),
                                                                   "label": IntField()},
                                                 [(image, 12)] * 4), refresh_checksum(f, "test")),
}


@pytest.mark.parametrize("problem", BAD_FOLDERS)
def test_bad_data_folder_gives_one_clear_error(problem, synthetic_folder, tmp_path):
    folder = copy_dataset(synthetic_folder, tmp_path / "data")
    BAD_FOLDERS[problem](folder)
    with pytest.raises(UserError) as error:
        load_dataset_info(folder)
    message = str(error.value)
    assert "\n" not in message and str(folder) in message


def test_checksums_can_be_skipped_but_structure_is_still_checked(synthetic_folder, tmp_path):
    folder = copy_dataset(synthetic_folder, tmp_path / "data")
    data = (folder / "train.beton").read_bytes()
    (folder / "train.beton").write_bytes(data[:len(data) - 5000])  # header intact, index cut
    with pytest.raises(UserError, match="truncated"):
        beton.load_dataset_info(folder, verify_checksums=False)
