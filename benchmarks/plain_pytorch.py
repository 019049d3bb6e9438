"""The recipe as a user writes it by hand in plain PyTorch: the baseline the kit's speed is measured against.

    python benchmarks/plain_pytorch.py --data.path data/cifar10 --training.lr 0.0106 --output.name plain

The same model, optimizer, one-cycle schedule, epochs and batch size as fast_cifar/train.py (the same config
and flags), on the same images (read back from the .beton files). What differs is the engineering:
torchvision's DataLoader with PIL transforms, a worker per core, fp32, the default memory layout, eager
mode, an unfused optimizer and no LR finder (give the max LR as --training.lr). Its results.json is
train.py's, so sweep.py and compare.py read it alike.
"""
import os
import time

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

from fast_cifar.augment import CROP_PADDING
from fast_cifar.beton import load_dataset_info, read_split
from fast_cifar.config import as_dict, declare_train_sections, parse_config
from fast_cifar.data import subset_indices
from fast_cifar.errors import exit_on_user_error
from fast_cifar.model import MODELS, describe_model, flops_per_image
from fast_cifar.optim import check_schedule, make_optimizer, make_scheduler
from fast_cifar.results import RunRecord, hardware_use
from fast_cifar.run_folder import make_run_folder
from fast_cifar.compute import onednn_is_safe


class InMemoryCIFAR(torch.utils.data.Dataset):
    """As torchvision.datasets.CIFAR10 works: (N, 32, 32, 3) uint8 images in memory, a PIL image per sample."""

    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def make_torchvision_loader(images, labels, info, batch_size, *, train, workers=None):
    """What a user writes by hand: torchvision transforms on PIL images (a random crop with 4 pixels of zero
    padding and a flip when `train`, then ToTensor and Normalize), batched by a DataLoader, a worker per core."""
    augment = [transforms.RandomCrop(32, padding=CROP_PADDING), transforms.RandomHorizontalFlip()] if train else []
    transform = transforms.Compose([*augment, transforms.ToTensor(),
                                    transforms.Normalize([m / 255 for m in info.mean], [s / 255 for s in info.std])])
    workers = os.cpu_count() if workers is None else workers
    return torch.utils.data.DataLoader(InMemoryCIFAR(images, labels, transform), batch_size=batch_size,
                                       shuffle=train, drop_last=train, num_workers=workers,
                                       pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0)


def make_loaders(cfg, info):
    loaders = []
    for split, subset in (("train", cfg.data.train_subset), ("test", cfg.data.test_subset)):
        images, labels = read_split(info.path(split), subset_indices(info.records[split], subset))
        batch_size = cfg.training.batch_size if split == "train" else cfg.training.test_batch_size
        loaders.append(make_torchvision_loader(images, labels, info, batch_size, train=split == "train"))
    return loaders


def evaluate(model, loader, device):
    model.eval()
    with torch.no_grad():
        correct = sum((model(images.to(device)).argmax(1).cpu() == labels).sum().item() for images, labels in loader)
    return correct / len(loader.dataset)


@exit_on_user_error
def main(argv=None):
    cfg = parse_config(declare_train_sections, argv, description=__doc__)
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.training.device != "cpu" else "cpu")
    torch.manual_seed(cfg.training.seed)
    torch.backends.mkldnn.enabled = onednn_is_safe(device)  # a CPU without AVX-512 hangs otherwise (see there)
    folder, lock = make_run_folder(cfg.output.dir, cfg.output.name, cfg.output.overwrite)
    with RunRecord(folder, as_dict(cfg), device, argv, lock=lock) as record:
        with record.timed("data_setup"):
            info = load_dataset_info(cfg.data.path)
            train_loader, test_loader = make_loaders(cfg, info)
        check_schedule(cfg.training, len(train_loader))
        model = MODELS[cfg.model.arch](len(info.classes), cfg.model.width).to(device)
        optimizer = make_optimizer(cfg.training, model, cfg.training.lr)  # the config's, unfused
        scheduler = make_scheduler(cfg.training, optimizer, cfg.training.lr, len(train_loader))
        images_per_epoch = len(train_loader) * cfg.training.batch_size
        record.data.update(loader="torchvision DataLoader + PIL", max_lr=cfg.training.lr,
                           optimizer=type(optimizer).__name__, model=describe_model(model, cfg.model.arch),
                           data={"source": info.source, "train_images_per_epoch": images_per_epoch})
        record.mark_first_step()
        for epoch in range(1, cfg.training.epochs + 1):
            model.train()
            started, total_loss = time.perf_counter(), 0.0
            for images, labels in train_loader:
                images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                loss = F.cross_entropy(model(images), labels, label_smoothing=cfg.training.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total_loss += loss.item()
            train_seconds, started = time.perf_counter() - started, time.perf_counter()
            accuracy, train_loss = evaluate(model, test_loader, device), total_loss / len(train_loader)
            record.add_epoch(epoch=epoch, train_loss=train_loss, test_accuracy=accuracy,
                             train_seconds=train_seconds, eval_seconds=time.perf_counter() - started)
            print(f"epoch {epoch}: train loss {train_loss:.3f}, test accuracy {100 * accuracy:.2f}%, "
                  f"{train_seconds:.1f} s", flush=True)
        record.summarize(cfg.output.accuracy_targets)
        record.data["hardware_use"] = hardware_use(flops_per_image(model), images_per_epoch * cfg.training.epochs,
                                                   record.timings["training"], record.data["device"])
        record.save(finished=True)
        print(f"Last-epoch Test Accuracy: {100 * accuracy:.2f}%; results: {folder / 'results.json'}")


if __name__ == "__main__":
    main()
