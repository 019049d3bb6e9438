"""Convert CIFAR-10 into FFCV .beton files: train.beton, test.beton and dataset.json.

    python scripts/write_datasets.py                                   # torchvision download
    python scripts/write_datasets.py --data.source path/to/cifar10-jpeg.tar.gz
    python scripts/write_datasets.py --data.source path/to/cifar-10-batches-py
    fast-cifar-write --data.source ...        # the same, once the package is installed
"""
import sys

from fastargs import Param, Section

from fast_cifar.beton import write_dataset
from fast_cifar.config import POSITIVE_INT, Integer, parse_config
from fast_cifar.errors import INTERRUPTED, Interrupted, exit_on_user_error, interruptible
from fast_cifar.sources import load_source


def declare_sections(config):
    Section("data", "Where CIFAR-10 comes from and where the .beton files go", config_descriptor=config).params(
        source=Param(str, "'download' (torchvision), 'synthetic' (tests), or a path to a torchvision-format "
                          "copy or an image folder <root>/{train,test}/<class>/*.jpg (folder or .tar.gz)",
                     default="download"),
        path=Param(str, "output folder", default="data/cifar10"),
        cache_dir=Param(str, "where torchvision downloads to", default="~/.cache/fast_cifar/torchvision"),
        writer_processes=Param(Integer(min=-1), "writer processes (-1: all cores)", default=-1),
        synthetic_train=Param(POSITIVE_INT, "train images of the synthetic source", default=1024),
        synthetic_test=Param(POSITIVE_INT, "test images of the synthetic source", default=512),
    )


@exit_on_user_error
def main(argv=None):
    cfg = parse_config(declare_sections, argv, description=__doc__).data
    try:
        with interruptible():
            splits, source = load_source(cfg.source, cfg.cache_dir, (cfg.synthetic_train, cfg.synthetic_test))
            info = write_dataset(splits, cfg.path, source, cfg.writer_processes)
    except Interrupted as signal_name:  # the files appear together or not at all: none of them did
        print(f"stopped by {signal_name}: no .beton file or dataset.json was written to {cfg.path}", file=sys.stderr)
        sys.exit(INTERRUPTED)
    counts = ", ".join(f"{name}: {split['records']}" for name, split in info["splits"].items())
    print(f"wrote {cfg.path}/{{train,test}}.beton ({counts}) from {source}")


if __name__ == "__main__":
    sys.exit(main())
