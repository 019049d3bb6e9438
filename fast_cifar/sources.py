"""Where CIFAR-10 comes from: every source ends as uint8 arrays in memory.

`load_source(source)` takes one string, the value of `--data.source`:
- `download`: torchvision downloads CIFAR-10 into a cache folder (needs internet);
- `synthetic`: a small, learnable, made-up data set for tests;
- a path, recognised by what it holds:
    * torchvision's own format: the `cifar-10-batches-py` folder (or its parent),
      or the `cifar-10-python.tar.gz` archive;
    * an image folder: `<root>/{train,test}/<class>/*.{png,jpg}`, as a folder or
      a .tar.gz archive, such as the offline copy `cifar10-jpeg.tar.gz`.
"""
import functools
import io
import pickle
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from fast_cifar.errors import UserError

SPLITS = ("train", "test")
IMAGE_SHAPE = (32, 32, 3)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TORCHVISION_FOLDER = "cifar-10-batches-py"
TORCHVISION_TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


@dataclass
class Split:
    images: np.ndarray  # (N, 32, 32, 3) uint8, RGB
    labels: np.ndarray  # (N,) int64, indices into `classes`
    classes: list


def load_source(source, cache_dir="~/.cache/fast_cifar/torchvision", synthetic_sizes=(1024, 512)):
    """Return {'train': Split, 'test': Split} and a short description of the source."""
    if source == "download":
        return download_with_torchvision(Path(cache_dir).expanduser()), f"torchvision download ({cache_dir})"
    if source == "synthetic":
        return make_synthetic(*synthetic_sizes), f"synthetic ({synthetic_sizes[0]} train, {synthetic_sizes[1]} test)"
    path = Path(source).expanduser()
    if not path.exists():
        raise UserError(f"data source not found: {path} (give 'download', 'synthetic' or a path to CIFAR-10)")
    try:
        if _is_torchvision_copy(path):
            return read_torchvision_copy(path), f"torchvision-format copy at {path}"
        return read_image_folder(path), f"image folder at {path}"
    except (tarfile.TarError, EOFError, OSError, pickle.UnpicklingError, KeyError, ValueError) as error:
        raise UserError(f"cannot read CIFAR-10 from {path}: {error}") from None


def download_with_torchvision(cache_dir):
    import torchvision

    splits = {}
    for name in SPLITS:
        try:
            dataset = torchvision.datasets.CIFAR10(cache_dir, train=(name == "train"), download=True)
        except (OSError, RuntimeError) as error:  # URLError is an OSError
            raise UserError(
                f"torchvision could not download CIFAR-10 ({error}); without internet, give a local copy "
                "with --data.source PATH: torchvision's cifar-10-batches-py folder or cifar-10-python.tar.gz, "
                "or an image folder <root>/{train,test}/<class>/*.png|jpg (a folder or a .tar.gz)"
            ) from None
        splits[name] = Split(np.asarray(dataset.data), np.asarray(dataset.targets, dtype=np.int64), dataset.classes)
    return splits


# --- torchvision's own format: pickled batches of 10,000 images -------------------


def _is_torchvision_copy(path):
    if path.is_dir():
        return (path / "batches.meta").exists() or (path / TORCHVISION_FOLDER / "batches.meta").exists()
    if tarfile.is_tarfile(path):
        with tarfile.open(path) as archive:
            return any(name.endswith("batches.meta") for name in archive.getnames())
    raise UserError(f"{path} is neither a folder nor a .tar.gz archive")


def read_torchvision_copy(path):
    """Read the pickled batches from the folder or straight out of the archive."""
    if path.is_dir():
        folder = path if (path / "batches.meta").exists() else path / TORCHVISION_FOLDER
        return _splits_from_batches(lambda name: (folder / name).read_bytes())
    with tarfile.open(path) as archive:
        members = {Path(m.name).name: m for m in map(checked_member, archive.getmembers()) if m.isfile()}
        check_end_of_archive(archive, path)

        def read(name):
            if name not in members:
                raise KeyError(f"{name} missing from the archive")
            return archive.extractfile(members[name]).read()

        return _splits_from_batches(read)


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles what CIFAR-10's batches hold (dicts, lists, strings, ints, NumPy arrays) and nothing else.

    A pickle can name any callable to rebuild an object, `os.system` included;
    this one may name only the few that rebuild a NumPy array.
    """

    ALLOWED = {(f"numpy{core}.{module}", name) for core in ("._core", ".core")
               for module, name in (("multiarray", "_reconstruct"), ("numeric", "_frombuffer"))}
    ALLOWED |= {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which CIFAR-10 batches never do")
        return super().find_class(module, name)


def _unpickle_batch(data, name):
    try:
        content = _BatchUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as error:
        raise UserError(f"refusing to read {name}: {error}") from None
    if not isinstance(content, dict):
        raise UserError(f"{name} is not a CIFAR-10 batch (a pickled dict)")
    return content


def _splits_from_batches(read):
    classes = _unpickle_batch(read("batches.meta"), "batches.meta")["label_names"]

    def load(batch_names):
        batches = [_unpickle_batch(read(name), name) for name in batch_names]
        # Rows are 3072 bytes: the red plane, then green, then blue.
        images = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = np.concatenate([b["labels"] for b in batches]).astype(np.int64)
        return Split(np.ascontiguousarray(images, dtype=np.uint8), labels, list(classes))

    return {"train": load(TORCHVISION_TRAIN_BATCHES), "test": load(["test_batch"])}


# --- image folders: <root>/{train,test}/<class>/<image> --------------------------

_IMAGE_PATH = re.compile(r"(?:^|/)(train|test)/([^/]+)/[^/]+$")


def read_image_folder(path):
    """Decode every image under `path` (a folder or a tar archive), sorted by split, class and name."""
    found = {split: [] for split in SPLITS}  # split -> [(class, name, encoded bytes)]
    for name, read in tqdm(_files_in(path), desc=f"reading {path.name}", unit="file"):
        match = _IMAGE_PATH.search(name)
        if match and name.lower().endswith(IMAGE_SUFFIXES):
            found[match[1]].append((match[2], name, read()))

    for split in SPLITS:
        if not found[split]:
            raise UserError(f"no images found in {path} under '{split}/<class>/' (.png or .jpg)")
    classes = sorted({label for label, _, _ in found["train"]})
    test_classes = sorted({label for label, _, _ in found["test"]})
    if classes != test_classes:
        raise UserError(f"train and test classes differ in {path}: {classes} vs {test_classes}")

    splits = {}
    for split in SPLITS:
        entries = sorted(found[split], key=lambda entry: entry[:2])
        images = np.empty((len(entries), *IMAGE_SHAPE), dtype=np.uint8)
        for i, (_, name, data) in enumerate(tqdm(entries, desc=f"decoding {split}", unit="img")):
            images[i] = decode_image(data, name)
        labels = np.array([classes.index(label) for label, _, _ in entries], dtype=np.int64)
        splits[split] = Split(images, labels, classes)
    return splits


def _files_in(path):
    """Yield (name, read) for each file, in storage order: seeking back in a .tar.gz re-decompresses it."""
    if path.is_dir():
        for file in sorted(path.rglob("*")):
            if file.is_symlink():
                raise UserError(f"refusing {file}: it is a symbolic link; give a folder of plain image files")
            if file.is_file():
                yield str(file.relative_to(path)), file.read_bytes
        return
    with tarfile.open(path) as archive:
        for member in map(checked_member, archive):
            if member.isfile():
                yield member.name, functools.partial(_read_member, archive, member)
        check_end_of_archive(archive, path)


def checked_member(member):
    """The member if it is a plain file or folder under the archive's root, as Python's own tarfile
    "data" filter would allow; else one line naming it. Nothing is skipped without a word."""
    kind = ("a symbolic link" if member.issym() else "a hard link" if member.islnk()
            else "a device file" if member.isdev() else None if member.isfile() or member.isdir() else "not a file")
    if kind:
        raise UserError(f"refusing the archive member {member.name}: it is {kind}; a CIFAR-10 archive holds "
                        f"only folders and image files")
    if member.name.startswith("/") or ".." in Path(member.name).parts:
        raise UserError(f"refusing the archive member {member.name}: its name points outside the archive's folder")
    return member


def check_end_of_archive(archive, path):
    """Python's tarfile stops quietly where an archive is cut between members; a whole one ends in zero blocks."""
    archive.fileobj.seek(archive.offset)
    if archive.fileobj.read(tarfile.BLOCKSIZE) != tarfile.NUL * tarfile.BLOCKSIZE:
        raise UserError(f"{path} is cut short: it ends without tar's end-of-archive marker")


def _read_member(archive, member):
    return archive.extractfile(member).read()


def decode_image(data, name):
    """32x32 RGB pixels from an encoded image, its size checked from the header before any decoding:
    a few KB of PNG can declare hundreds of megapixels."""
    try:
        with open_header_only(data) as opened:
            if opened.size != IMAGE_SHAPE[1::-1]:
                raise UserError(f"image {name} is {opened.size[0]}x{opened.size[1]}: a CIFAR-10 copy holds "
                                f"32x32 images only")
            return _to_rgb(opened, name)
    except OSError as error:
        raise UserError(f"cannot decode image {name}: {error}") from None


def open_header_only(data):
    """Pillow's Image.open reads only the header; its own check refuses a huge image without saying its
    size, so it is off here and `decode_image` checks the size before the pixels are decoded."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        return Image.open(io.BytesIO(data))
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _to_rgb(image, name):
    """RGB uint8. PIL's convert("RGB") clips 16-bit grayscale to 255 (all white), so scale that by hand."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # a 16-bit grayscale PNG opens as one of these
        values = np.asarray(image, dtype=np.int64)
        if values.min() < 0 or values.max() > 65535:
            raise UserError(f"image {name} holds 32-bit integer pixels; give 8- or 16-bit images")
        gray = np.round(values / 257).astype(np.uint8)  # 65535 -> 255
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode == "F":
        raise UserError(f"image {name} holds floating-point pixels; give 8- or 16-bit images")
    return np.asarray(image.convert("RGB"))


# --- synthetic: for tests, learnable in a few steps ------------------------------


def make_synthetic(train_size, test_size, num_classes=10, seed=0):
    """Each class is a smooth random colour pattern; each image is its class's pattern plus noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(num_classes, 4, 4, 3))
    patterns = coarse.repeat(8, axis=1).repeat(8, axis=2)  # (classes, 32, 32, 3)
    classes = [f"class_{i}" for i in range(num_classes)]

    def split(size):
        labels = np.arange(size, dtype=np.int64) % num_classes
        rng.shuffle(labels)
        noise = rng.normal(0, 40, size=(size, *IMAGE_SHAPE))
        images = np.clip(patterns[labels] + noise, 0, 255).astype(np.uint8)
        return Split(images, labels, classes)

    return {"train": split(train_size), "test": split(test_size)}
