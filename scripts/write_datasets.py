"""Convert CIFAR-10 into FFCV .beton files: the command lives in fast_cifar/write_datasets.py.

    python scripts/write_datasets.py --data.source path/to/cifar10-jpeg.tar.gz
    python scripts/write_datasets.py --help
"""
import sys

from fast_cifar.write_datasets import main

if __name__ == "__main__":
    sys.exit(main())
