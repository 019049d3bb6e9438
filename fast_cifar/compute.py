"""Where and how a run computes: the device, the precision, the memory layout and the loader, each chosen
with the reason for it, and the global torch settings that go with them."""
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fast_cifar.distributed import World
from fast_cifar.errors import UserError

# Importing ffcv sets torch's CPU thread count to 1, and its loaders set it to their worker count every epoch.
# The count is recorded here, before any ffcv import: train.py imports this module before it builds a loader,
# and ffcv_pipeline.py imports it before ffcv. Training puts it back (choose_compute, EpochLoader).
TORCH_THREADS = torch.get_num_threads()

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}  # training.precision's compute dtypes



@dataclass
class Compute:
    """Where and how the run computes, and why each choice was made."""
    device: torch.device
    world: World  # this process's place among torchrun's processes
    precision: str  # "bf16" or "fp32"
    precision_why: str
    channels_last: bool
    layout_why: str
    loader: str  # "ffcv" or "device": data.loader with `auto` decided

    @property
    def dtype(self):
        return DTYPES[self.precision]

    @property
    def memory_format(self):
        return torch.channels_last if self.channels_last else torch.contiguous_format


def choose_compute(cfg, world):
    """Device, precision and layout, and the global torch settings that go with them; seeds everything."""
    device = pick_device(cfg.training.device, world)
    torch.set_num_threads(TORCH_THREADS)  # whatever an earlier ffcv import or loader in this process set
    torch.backends.mkldnn.enabled = onednn_is_safe(device)  # see onednn_is_safe
    torch.backends.cudnn.benchmark = not cfg.training.deterministic  # fixed shapes: cuDNN times its algorithms once
    torch.use_deterministic_algorithms(cfg.training.deterministic)
    seed_everything(cfg.training.seed)
    return Compute(device, world, *pick_precision(cfg.training.precision, device),
                   *pick_memory_format(cfg.model.channels_last, device), pick_loader(cfg.data.loader, device))


def pick_device(name, world):
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError("training.device is 'cuda' but torch sees no GPU")
    return torch.device("cuda", world.local_rank)


def cpu_bf16_flags(cpuinfo=Path("/proc/cpuinfo")):
    """The CPU's native bf16 instruction sets (AVX512_BF16, AMX), as Linux lists them."""
    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:
        return []
    return sorted(flags & {"avx512_bf16", "amx_bf16"})


def pick_precision(precision, device, cpu_flags=None):
    """The compute dtype and why: bf16 where the hardware runs it natively, since elsewhere it is emulated
    and many times slower than fp32."""
    if precision != "auto":
        return precision, "set by training.precision"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return "bf16", "auto: a CUDA GPU with bf16"
        name = torch.cuda.get_device_name(device)
        return "fp32", f"auto: {name} has no native bf16 (and fp16 would need a loss scaler): fp32"
    flags = cpu_bf16_flags() if cpu_flags is None else cpu_flags
    if flags:
        return "bf16", f"auto: the CPU has native bf16 ({', '.join(flags)})"
    return "fp32", "auto: the CPU has no native bf16 (neither avx512_bf16 nor amx_bf16)"


def onednn_is_safe(device):
    """False on a CPU without AVX-512, where torch's oneDNN convolutions are not safe beside FFCV.

    There the AVX2 kernel for the weight gradient of 1x1 convolutions hangs (or
    corrupts memory) once OpenCV, which FFCV loads, is in the process: seen with
    torch 2.14.1 on an AVX2 AMD EPYC, in both layouts, sooner in channels-last.
    Such CPUs train with torch's native convolutions, in the contiguous layout
    (faster than channels-last without oneDNN).
    """
    return device.type != "cpu" or torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def pick_loader(name, device):
    """`auto`: the data held on a GPU, FFCV's threads on a CPU (config.py says what was measured)."""
    if name != "auto":
        return name
    return "device" if device.type == "cuda" else "ffcv"


def pick_memory_format(channels_last, device):
    """Channels-last as configured, unless oneDNN is off on this CPU; and why."""
    if channels_last and not onednn_is_safe(device):
        return False, (f"contiguous: on this CPU ({torch.backends.cpu.get_cpu_capability()}, no AVX-512) "
                       f"oneDNN is off, so convolutions run natively, faster contiguous")
    return channels_last, "set by model.channels_last"


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
