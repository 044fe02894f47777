"""torchrun / DDP plumbing: one process per device, rank 0 writes, others follow.

``torchrun --nproc_per_node N -m solution train ...`` sets RANK, WORLD_SIZE and
LOCAL_RANK; without them everything runs as a single process (world size 1).
The backend is NCCL on GPUs and gloo on CPU, so the same code is tested on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def init_distributed(device_name: str = "auto", timeout_min: float = 30.0) -> Dist:
    """Join the process group torchrun describes; a plain run is a world of one. A collective that waits
    longer than ``timeout_min`` (train.dist_timeout_min) fails instead of hanging."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(minutes=timeout_min))
    return Dist(rank, world, local_rank)


def shutdown(info: Dist) -> None:
    if info.active and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: Dist) -> None:
    if info.active:
        dist.barrier()


def all_gather_objects(info: Dist, obj):
    """A list with every rank's ``obj``, in rank order (picklable objects; small payloads)."""
    if not info.active:
        return [obj]
    out = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(info: Dist, obj):
    """Rank 0's ``obj`` on every rank."""
    if not info.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
