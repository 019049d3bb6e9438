import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ffcv.fields import FloatField, IntField, RGBImageField
from ffcv.types import HeaderType
from ffcv.writer import DatasetWriter

from fast_cifar import beton
from fast_cifar.beton import INFO_FILE, channel_stats, load_dataset_info, read_beton, read_split, write_dataset
from fast_cifar.errors import UserError
from fast_cifar.files import sha256
from fast_cifar.sources import Split, make_synthetic

from helpers import REPO, error_lines, wait_until


def test_write_records_counts_checksums_and_stats(synthetic_folder):
    info = json.loads((synthetic_folder / INFO_FILE).read_text())
    assert info["splits"]["train"]["records"] == 512
    assert info["splits"]["test"]["records"] == 200
    assert info["splits"]["train"]["sha256"] == sha256(synthetic_folder / "train.beton")
    assert info["classes"] == [f"class_{i}" for i in range(10)]
    assert sorted(p.name for p in synthetic_folder.iterdir()) == ["dataset.json", "test.beton", "train.beton"]
    loaded = load_dataset_info(synthetic_folder)
    assert loaded.records == {"train": 512, "test": 200}


@pytest.mark.slow
def test_real_photos_are_written_with_their_classes_and_statistics(real_subset_folder):
    info = load_dataset_info(real_subset_folder)
    assert info.records == {"train": 1000, "test": 200}
    assert info.classes[0] == "airplane" and info.classes[-1] == "truck"
    # CIFAR-10's published train statistics, a little shifted by the JPEG re-encoding and the 1,000-image cut.
    np.testing.assert_allclose(info.mean, [125.3, 123.0, 113.9], atol=1.5)
    np.testing.assert_allclose(info.std, [63.0, 62.1, 66.7], atol=2.0)


def test_read_split_returns_the_written_pixels(synthetic_folder):
    expected = make_synthetic(512, 200)["test"]  # what the fixture wrote
    images, labels = read_split(synthetic_folder / "test.beton")
    assert np.array_equal(images, expected.images) and np.array_equal(labels, expected.labels)
    subset = np.array([3, 7, 150])
    assert np.array_equal(read_split(synthetic_folder / "test.beton", subset)[0], expected.images[subset])


def test_the_numpy_reader_reads_what_ffcvs_reader_reads(synthetic_folder):
    from ffcv.reader import Reader

    for split in ("train", "test"):
        path = synthetic_folder / f"{split}.beton"
        ours, theirs = read_beton(path), Reader(str(path))
        assert ours.num_samples == theirs.num_samples and ours.allocated == len(theirs.alloc_table)
        assert ours.metadata.dtype.itemsize == theirs.metadata.dtype.itemsize
        for index, name in enumerate(theirs.field_names):
            assert np.array_equal(ours.metadata[name], theirs.metadata[f"f{index}"]), name


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


def edit_info(folder, **changes):
    info = json.loads((folder / INFO_FILE).read_text())
    info.update(changes)
    (folder / INFO_FILE).write_text(json.dumps(info))


image = np.zeros((32, 32, 3), np.uint8)
BAD_FOLDERS = {
    "info_no_splits": lambda f: edit_info(f, splits={}),
    "info_zero_std": lambda f: edit_info(f, std=[63.0, 0.0, 66.7]),
    "info_nan_mean": lambda f: edit_info(f, mean=[float("nan"), 1.0, 1.0]),
    "info_a_list": lambda f: (f / INFO_FILE).write_text("[1, 2]"),
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


# --- the writer under faults ------------------------------------------------------

def test_a_failing_writer_process_ends_the_write_with_one_line(tmp_path, monkeypatch):
    """A worker that dies (as on a full disk) used to leave FFCV's writer polling forever."""
    def full_disk(self, index):
        if index == 30:
            raise OSError(28, "No space left on device")
        return self.split.images[index], int(self.split.labels[index])

    monkeypatch.setattr(beton._Samples, "__getitem__", full_disk)  # the forked workers inherit it
    with pytest.raises(UserError, match=r"writing train.beton failed in a writer process "
                                        r"\(OSError: \[Errno 28\] No space left on device\)"):
        write_dataset(make_synthetic(200, 20), tmp_path / "out", "synthetic", num_workers=2)
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.slow
def test_a_file_size_limit_stops_the_writer_script(tmp_path):
    """End to end: writes fail with EFBIG past 2 MiB (the train split needs 3), the script ends with one line,
    exit 4, nothing left."""
    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, 2 << 20))

    result = subprocess.run([sys.executable, str(REPO / "scripts" / "write_datasets.py"), "--data.source", "synthetic",
                             "--data.synthetic_train", "1000", "--data.path", tmp_path / "out"],
                            preexec_fn=limit_file_size, capture_output=True, text=True, timeout=300)
    assert result.returncode == 4, result.stderr
    assert error_lines(result.stderr)[-1].startswith("error: writing train.beton failed in a writer process"), \
        result.stderr
    assert list((tmp_path / "out").iterdir()) == []


def test_not_enough_free_space_is_refused_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(beton.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 << 30, 10 << 30, 1 << 20))
    with pytest.raises(UserError, match=r"not enough free space in .*: 1 MiB free, about \d+ MiB needed"):
        write_dataset(make_synthetic(40, 20), tmp_path / "out", "synthetic")
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("obstacle", ["file_in_the_way", "read_only"])
def test_unwritable_target_is_one_line(tmp_path, obstacle):
    target = tmp_path / "out"
    if obstacle == "file_in_the_way":
        target.write_text("a file, not a folder")
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        target.mkdir(mode=0o555)
    with pytest.raises(UserError, match="cannot write to data folder"):
        write_dataset(make_synthetic(40, 20), target, "synthetic", num_workers=1)


KILLABLE_WRITER = """
import sys, time
from fast_cifar import beton
from fast_cifar.sources import make_synthetic
slow = beton._Samples.__getitem__
beton._Samples.__getitem__ = lambda self, index: (time.sleep(0.01), slow(self, index))[1]
beton.write_dataset(make_synthetic(4000, 100), sys.argv[1], "synthetic", num_workers=2)
"""


@pytest.mark.slow
def test_kill_9_leaves_no_workers_and_the_next_write_removes_its_temporaries(tmp_path):
    out = tmp_path / "out"
    writer = subprocess.Popen([sys.executable, "-c", KILLABLE_WRITER, str(out)], stderr=subprocess.DEVNULL)
    # the writer and its workers share its command line: wait until the workers write
    assert wait_until(lambda: list(out.glob(".train.beton.*.tmp")) and len(processes_mentioning(str(out))) > 1, 60)
    assert writer.poll() is None
    writer.kill()
    writer.wait()
    assert wait_until(lambda: not processes_mentioning(str(out)), 10)  # its workers died with it

    write_dataset(make_synthetic(40, 20), out, "synthetic", num_workers=1)
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "test.beton", "train.beton"]


def processes_mentioning(text):
    """Pids of live processes whose command line contains `text` (forked workers keep their parent's)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found
