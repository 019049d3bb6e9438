"""benchmarks/plain_pytorch.py trains what its config names, into a record of the kit's shape."""
import pytest

from fast_cifar.results import read_run

from helpers import REPO, TINY_RUN, run_main

pytestmark = pytest.mark.slow  # it trains


def test_it_builds_the_optimizer_its_config_names(synthetic_folder, tmp_path):
    result = run_main("benchmarks/plain_pytorch.py", "--config", REPO / "rn18_configs" / "24ep_sgd_reference.yaml",
                      *TINY_RUN, "--training.lr", 0.0106, "--data.path", synthetic_folder, "--output.dir", tmp_path,
                      "--output.name", "sgd")
    assert result.returncode == 0, result.stderr[-3000:]
    record = read_run(tmp_path / "sgd")  # a peer's record has the kit's shape
    assert record["optimizer"] == "SGD" and record["finished"]
    # by hand: torchvision's loader, and no LR finder: it trains at the LR it is given
    assert record["loader"].startswith("torchvision DataLoader") and record["max_lr"] == 0.0106
