"""CIFAR-10 as FFCV .beton files: writing them, and checking them before training.

A data folder holds `train.beton`, `test.beton` and `dataset.json`, which records
each file's record count and sha256, the class names, the train split's
per-channel mean and std (used to normalize on the device) and the source.
"""
import contextlib
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fast_cifar.errors import UserError, storage_failure
from fast_cifar.files import atomic_path, remove_stale_temporaries, sha256, writable_folder, write_json
from fast_cifar.sources import SPLITS

INFO_FILE = "dataset.json"


def beton_path(folder, split):
    return Path(folder) / f"{split}.beton"


# --- writing ---------------------------------------------------------------------


class _Samples:
    """The indexable (image, label) view that ffcv's DatasetWriter reads."""

    def __init__(self, split):
        self.split = split

    def __len__(self):
        return len(self.split.labels)

    def __getitem__(self, index):
        return self.split.images[index], int(self.split.labels[index])


def write_dataset(splits, folder, source, num_workers=-1):
    """Write both splits and dataset.json; every file appears complete or not at all."""
    from ffcv.fields import IntField, RGBImageField  # ffcv only to write: reading needs numpy alone
    from ffcv.writer import DatasetWriter

    from fast_cifar.writer_workers import release_shared_memory, supervised_workers

    for name in SPLITS:
        if len(splits[name].labels) == 0:
            raise UserError(f"the {name} split of {source} is empty")
    folder = writable_folder(folder, "data folder")
    remove_stale_temporaries(folder)  # left by a writer that was killed outright
    info = {"source": source, "classes": splits["train"].classes, "splits": {}}
    info.update(channel_stats(splits["train"].images))
    check_free_space(folder, sum(len(splits[name].labels) for name in SPLITS), num_workers)
    with contextlib.ExitStack() as renames:  # all files are renamed into place only if every write succeeded
        for name in SPLITS:
            temporary = renames.enter_context(atomic_path(beton_path(folder, name)))
            fields = {"image": RGBImageField(write_mode="raw"), "label": IntField()}
            writer = DatasetWriter(str(temporary), fields, num_workers=num_workers)
            try:
                with supervised_workers(f"{name}.beton"):
                    writer.from_indexed_dataset(_Samples(splits[name]))
            except OSError as error:
                raise storage_failure(error, beton_path(folder, name)) or UserError(
                    f"cannot write {beton_path(folder, name)}: {error.strerror or error}") from None
            finally:
                release_shared_memory(writer)
            records = check_beton(temporary, len(info["classes"]))
            if records != len(splits[name].labels):
                raise UserError(f"wrote {records} records to {name}.beton, expected {len(splits[name].labels)}")
            info["splits"][name] = {"file": f"{name}.beton", "records": records, "sha256": sha256(temporary)}
        write_json(folder / INFO_FILE, info)
    return info


RECORD_BYTES = 32 * 32 * 3 + 64  # raw pixels plus FFCV's metadata and allocation table, generously
PAGE_BYTES = 8 << 20  # DatasetWriter's default page (4x ffcv's MIN_PAGE_SIZE): each worker fills pages of 8 MiB


def check_free_space(folder, records, num_workers=-1):
    """Refuse before writing when the disk cannot hold the files, partly filled pages included
    (each of FFCV's writer workers leaves its last page part filled)."""
    workers = num_workers if num_workers > 0 else os.cpu_count()
    needed = records * RECORD_BYTES + len(SPLITS) * (workers + 2) * PAGE_BYTES
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise UserError(f"not enough free space in {folder}: {free / 2**20:.0f} MiB free, "
                        f"about {math.ceil(needed / 2**20)} MiB needed for {records} images")


def channel_stats(images, chunk=10_000):
    """Per-channel mean and std on the 0-255 scale, accumulated in float64 chunk by chunk."""
    total = np.zeros(3)
    total_sq = np.zeros(3)
    for start in range(0, len(images), chunk):
        pixels = images[start:start + chunk].reshape(-1, 3).astype(np.float64)
        total += pixels.sum(axis=0)
        total_sq += (pixels ** 2).sum(axis=0)
    count = images.shape[0] * images.shape[1] * images.shape[2]
    mean = total / count
    std = np.sqrt(total_sq / count - mean ** 2)
    return {"mean": mean.round(4).tolist(), "std": std.round(4).tolist()}


# --- reading ---------------------------------------------------------------------


@dataclass
class DatasetInfo:
    folder: Path
    classes: list
    mean: list
    std: list
    records: dict  # split -> count
    source: str
    sha256: dict  # split -> the .beton file's sha256: the data set's identity

    def path(self, split):
        return beton_path(self.folder, split)

    @property
    def fill(self):
        """The mean colour as a pixel value: what a crop fills its gap with, zero once normalized."""
        return tuple(int(round(channel)) for channel in self.mean)


def load_dataset_info(folder, verify_checksums=True):
    """Check the data folder before training: one clear error for anything missing or corrupt."""
    folder = Path(folder)
    info_path = folder / INFO_FILE
    if not info_path.is_file():
        raise UserError(f"no {INFO_FILE} in {folder}: write the data set first "
                        f"(python scripts/write_datasets.py --data.path {folder})")
    try:
        info = json.loads(info_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{info_path} is not a valid dataset description ({error})") from None
    problem = _describe_problem(info)
    if problem:
        raise UserError(f"{info_path} is not a valid dataset description: {problem}")
    splits, classes = info["splits"], info["classes"]

    for name in SPLITS:
        path = beton_path(folder, name)
        if not path.is_file():
            raise UserError(f"missing {path}: write the data set first (python scripts/write_datasets.py)")
        if verify_checksums and sha256(path) != splits[name]["sha256"]:
            raise UserError(f"{path} is corrupt or was changed: its sha256 does not match {INFO_FILE}")
        records = check_beton(path, len(classes))
        if records != splits[name]["records"]:
            raise UserError(f"{path} holds {records} records, {INFO_FILE} says {splits[name]['records']}")
    records = {name: splits[name]["records"] for name in SPLITS}
    sha256s = {name: splits[name]["sha256"] for name in SPLITS}
    return DatasetInfo(folder, classes, info["mean"], info["std"], records, info.get("source", "unknown"), sha256s)


def _describe_problem(info):
    """What is wrong with a parsed dataset.json, or None."""
    if not isinstance(info, dict):
        return "expected a JSON object"
    classes = info.get("classes")
    if not (isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes)):
        return "'classes' must list at least two class names"
    for key in ("mean", "std"):
        values = info.get(key)
        if not (isinstance(values, list) and len(values) == 3
                and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)):
            return f"'{key}' must hold three finite numbers, one per channel"
    if min(info["std"]) <= 0:
        return f"'std' must be positive in every channel (got {info['std']}): normalizing would divide by zero"
    splits = info.get("splits")
    for name in SPLITS:
        entry = splits.get(name) if isinstance(splits, dict) else None
        if not (isinstance(entry, dict) and isinstance(entry.get("records"), int)
                and isinstance(entry.get("sha256"), str)):
            return f"'splits' must describe the {name} split (its records and sha256)"
    return None


# --- reading, with numpy alone ---------------------------------------------------------------------
# A .beton (FFCV's format, version 2) is a header, one descriptor per field, a table of per-record
# metadata (for a raw image its size and where its pixels are; for an int the value itself), the data
# pages, and an allocation table at the end. Reading it with numpy spares a run on the device loader
# ffcv's import (seconds: its image field builds a numba typed dict when imported); a test checks
# that this reads what ffcv's own Reader reads.
BETON_VERSION = 2
HEADER = np.dtype([("version", "<u2"), ("num_fields", "<u2"), ("page_size", "<u4"), ("num_samples", "<u8"),
                   ("alloc_table_ptr", "<u8")], align=True)
FIELD = np.dtype([("type_id", "<u1"), ("name", ("<u1", 16)), ("arguments", ("<u1", (1024,)))], align=True)
ALLOCATION = np.dtype([("sample_id", "<u8"), ("ptr", "<u8"), ("size", "<u8")])
FIELDS = {"image": (2, np.dtype([("mode", "u1"), ("width", "<u2"), ("height", "<u2"), ("data_ptr", "<u8")])),
          "label": (1, np.dtype("<i8"))}  # the kit's two fields: ffcv's RGBImageField and IntField
RAW_IMAGE = 1  # an image's mode: 0 is JPEG


@dataclass
class Beton:
    """What a .beton says about its records: how many, each field's per-record metadata, and how many
    records its allocation table indexes."""
    num_samples: int
    fields: dict  # name -> ffcv's type id
    metadata: np.ndarray  # one row per record, a column per field, named as the field
    allocated: int


def read_beton(path):
    """The header, fields, metadata and allocation table of a .beton; ValueError if they do not hold."""
    header = np.fromfile(path, dtype=HEADER, count=1)
    if len(header) != 1 or header["version"][0] != BETON_VERSION:
        raise ValueError(f"not an FFCV version-{BETON_VERSION} file")
    header = header[0]
    fields = np.fromfile(path, dtype=FIELD, count=int(header["num_fields"]), offset=HEADER.itemsize)
    names = [bytes(field["name"]).split(b"\0")[0].decode() for field in fields]
    types = dict(zip(names, (int(type_id) for type_id in fields["type_id"])))
    if types != {name: type_id for name, (type_id, _) in FIELDS.items()}:
        raise ValueError(f"fields {types} where the kit writes (image: 2, the raw-image type; label: 1, int)")
    row = np.dtype([(name, FIELDS[name][1]) for name in names], align=True)
    count = int(header["num_samples"])
    metadata = np.fromfile(path, dtype=row, count=count, offset=HEADER.itemsize + fields.nbytes)
    if len(metadata) != count:
        raise ValueError(f"{len(metadata)} of {count} records' metadata")
    allocated = np.fromfile(path, dtype=ALLOCATION, offset=int(header["alloc_table_ptr"]))
    return Beton(count, types, metadata, len(allocated))


def read_labels(path):
    """A .beton's labels (N,) int64, in file order, from its metadata alone."""
    return read_beton(path).metadata["label"].astype(np.int64)


def read_split(path, indices=None):
    """Images (N, 32, 32, 3) uint8 and labels (N,) of a raw-image .beton, straight from its bytes."""
    metadata = read_beton(path).metadata
    images, labels = metadata["image"], metadata["label"]
    if indices is not None:
        images, labels = images[indices], labels[indices]
    if (images["mode"] != RAW_IMAGE).any():
        raise UserError(f"{path} holds compressed images; --data.loader device reads raw ones (write_datasets.py)")
    file = np.memmap(path, dtype=np.uint8, mode="r")
    pixels = np.arange(32 * 32 * 3)
    out = np.empty((len(images), 32, 32, 3), dtype=np.uint8)
    for start in range(0, len(images), 4096):  # gather in chunks: the index array is 8 bytes per pixel
        pointers = images["data_ptr"][start:start + 4096].astype(np.int64)
        out[start:start + 4096] = file[pointers[:, None] + pixels].reshape(-1, 32, 32, 3)
    return out, labels.astype(np.int64)


def check_beton(path, num_classes):
    """Check a .beton's fields, image sizes and labels; return its length."""
    try:
        beton = read_beton(path)
    except (ValueError, OSError, IndexError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not a readable .beton file ({type(error).__name__}: {error})") from None
    if beton.num_samples == 0:
        raise UserError(f"{path} holds no records")
    if beton.allocated != beton.num_samples:  # the allocation table is the file's last part
        raise UserError(f"{path} is truncated: {beton.allocated} of {beton.num_samples} images indexed")
    images, labels = beton.metadata["image"], beton.metadata["label"]
    if (images["width"] != 32).any() or (images["height"] != 32).any():
        raise UserError(f"{path} holds images that are not 32x32")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise UserError(f"{path} holds labels outside 0..{num_classes - 1}")
    return beton.num_samples
