"""Several devices through PyTorch's own engine: `torchrun --nproc_per_node N fast_cifar/train.py ...`.

One process per device, DistributedDataParallel, NCCL on GPUs and gloo on CPUs.
Each rank reads its own shard of every split; metrics are summed over ranks;
only rank 0 writes files. A plain `python fast_cifar/train.py` is a world of one,
and every function here is then a no-op.
"""
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self):
        return self.rank == 0


def join():
    """The world torchrun describes in the environment; init the process group when it has several ranks."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return world


def leave(world):
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def sum_over_ranks(tensor, world):
    if world.size > 1:
        dist.all_reduce(tensor)
    return tensor


def mean_over_ranks(sums, count, world):
    """Each of `sums` (device scalars) over `count` samples, both totalled over all ranks."""
    totals = torch.stack([*(value.double() for value in sums), torch.tensor(count, device=sums[0].device).double()])
    *sums, count = sum_over_ranks(totals, world).tolist()
    return [value / count for value in sums]


def from_rank_zero(value, world, device):
    """A float that rank 0 computed, on every rank."""
    if world.size == 1:
        return value
    tensor = torch.tensor([value if world.is_main else 0.0], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return float(tensor)
