"""airbench94 or airbench96 (Keller Jordan's, `pip install airbench==0.1.8`) on this kit's images, recorded
as fast_cifar/train.py records its runs. CUDA only.

    python benchmarks/airbench_peer.py --airbench.variant 94 --data.path data/cifar10 --output.name airbench94

airbench reads a tensor file: this writes one from the .beton files into a temporary folder, then runs the
package as its README does (`warmup94()`, then `train94()`: its own epochs, batch, optimizer and schedule,
all counted in the end-to-end time) and reports the test accuracy without and with its test-time
augmentation (mirror and translate, `tta_level` 2).
"""
import importlib.metadata
import math
import os
import tempfile
from pathlib import Path

import torch
from fastargs import Param, Section
from fastargs.validation import OneOf

from fast_cifar.beton import load_dataset_info, read_split
from fast_cifar.config import as_dict, declare_train_sections, parse_config
from fast_cifar.errors import UserError, exit_on_user_error
from fast_cifar.files import atomic_file
from fast_cifar.model import describe_model, flops_per_image
from fast_cifar.results import RunRecord, Timer, hardware_use
from fast_cifar.run_folder import make_run_folder


def declare_sections(config):
    declare_train_sections(config)  # the same flags as train.py: data.path, training.seed, output.*
    Section("airbench", "Which airbench", config_descriptor=config).params(
        variant=Param(OneOf(["94", "96"]), "94: about 94% in 10 epochs; 96: about 96% in 40 (original CIFAR-10)",
                      default="94"))


def write_tensor_files(info, folder):
    """train.pt and test.pt in the layout airbench's CifarLoader reads: uint8 images (N, 32, 32, 3), labels."""
    for split in ("train", "test"):
        images, labels = read_split(info.path(split))
        with atomic_file(folder / f"{split}.pt") as file:
            torch.save({"images": torch.from_numpy(images), "labels": torch.from_numpy(labels),
                        "classes": list(info.classes)}, file)


def import_airbench():
    if not torch.cuda.is_available():
        raise UserError("airbench runs on a CUDA GPU only, and torch sees none")
    try:
        import airbench
    except ImportError:
        raise UserError("airbench is not installed: pip install airbench==0.1.8") from None
    return airbench


@exit_on_user_error
def main(argv=None):
    cfg = parse_config(declare_sections, argv, description=__doc__)
    airbench = import_airbench()
    variant = cfg.airbench.variant
    library = getattr(airbench, f"lib_airbench{variant}")
    torch.manual_seed(cfg.training.seed)  # airbench draws its order and crops from torch's generator
    folder, lock = make_run_folder(cfg.output.dir, cfg.output.name, cfg.output.overwrite)
    folder = folder.resolve()  # airbench reads its data from ./cifar10: the run changes folder
    with RunRecord(folder, as_dict(cfg), torch.device("cuda"), argv, lock=lock) as record, \
            tempfile.TemporaryDirectory() as scratch:
        record.data["versions"]["airbench"] = importlib.metadata.version("airbench")
        with record.timed("data_setup"):
            info = load_dataset_info(cfg.data.path)
            (Path(scratch) / "cifar10").mkdir()
            write_tensor_files(info, Path(scratch) / "cifar10")
        os.chdir(scratch)
        with record.timed("warmup"):  # cuDNN's autotuning, on one epoch of a throwaway net, as airbench's README does
            getattr(airbench, f"warmup{variant}")()
        record.mark_first_step()
        with Timer(record.device) as training:
            model = getattr(airbench, f"train{variant}")(verbose=False)
        with Timer(record.device) as evaluation:
            test_loader = airbench.CifarLoader("cifar10", train=False, batch_size=2000)
            accuracy, accuracy_tta = (airbench.evaluate(model, test_loader, tta_level=level) for level in (0, 2))
        train_seconds, hyp = training.seconds, library.hyp["opt"]
        record.add_epoch(epoch=hyp["train_epochs"], test_accuracy=accuracy, test_accuracy_tta=accuracy_tta,
                         train_seconds=train_seconds, eval_seconds=evaluation.seconds)
        steps = math.ceil(info.records["train"] // hyp["batch_size"] * hyp["train_epochs"])
        record.data.update(loader="airbench CifarLoader (on the GPU)", tta="mirror and translate (tta_level 2)",
                           model=describe_model(model, f"airbench{variant}"),
                           data={"source": info.source, "train_images_per_epoch": info.records["train"]})
        record.summarize(cfg.output.accuracy_targets)
        try:  # airbench's network is not ours: if the counter cannot trace it, the run still counts
            flops = flops_per_image(model.float())
            record.data["hardware_use"] = hardware_use(flops, steps * hyp["batch_size"], train_seconds,
                                                       record.data["device"])
        except Exception as error:
            record.warn(f"FLOPs not counted: {type(error).__name__}: {error}")
        record.save(finished=True)
        print(f"airbench{variant}: {100 * accuracy:.2f}% ({100 * accuracy_tta:.2f}% with TTA) after "
              f"{train_seconds:.1f} s of training; results: {folder / 'results.json'}")


if __name__ == "__main__":
    main()
