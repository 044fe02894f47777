"""torchrun / DDP plumbing: one process per device, rank 0 writes, others follow.

``torchrun --nproc_per_node N -m solution train ...`` sets RANK, WORLD_SIZE and
LOCAL_RANK; without them everything runs as a single process (world size 1).
The backend is NCCL on GPUs and gloo on CPU, so the same code is tested on CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist

from .torchrun import launch

T = TypeVar("T")


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
    place = launch()
    if not place.active:
        return Dist()
    rank, world, local_rank = place.rank, place.world, place.local_rank
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    if use_cuda:  # more processes than GPUs on a node (or a node numbering its GPUs from 0): wrap around
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(minutes=timeout_min))
    return Dist(rank, world, local_rank)


class RankFailed(RuntimeError):
    """Another rank failed in work only it does; this rank stops too instead of waiting in a collective."""


def _failure(error: BaseException | None) -> str | None:
    return None if error is None else " ".join(f"{type(error).__name__}: {error}".split())


def rank0_outcome(info: Dist, result: T | None, error: BaseException | None, share: bool = False) -> T | None:
    """Tell every rank how rank 0's own work ended (one broadcast of its result when ``share``, and of its
    failure): rank 0 re-raises its error, the others stop with one line instead of waiting in their next
    collective until ``train.dist_timeout_min`` (NCCL never notices a peer that died)."""
    if info.active:
        sent, failed = broadcast_object(info, (result if share else None, _failure(error)))
        if failed is not None and not info.main:
            raise RankFailed(f"rank 0 failed ({failed}); rank {info.rank} stops with it")
        if share:
            result = sent
    if error is not None:
        raise error
    return result


def main_only(info: Dist, work: Callable[..., T], *args, **kwargs) -> T | None:
    """``work`` on rank 0 only (saving, plotting, validation, KL initialisation), then :func:`rank0_outcome`.
    Returns ``work``'s result on rank 0, None elsewhere."""
    result, error = None, None
    if info.main:
        try:
            result = work(*args, **kwargs)
        except Exception as exc:  # re-raised by rank0_outcome, after the others were told
            error = exc
    return rank0_outcome(info, result, error)


def _collective_device() -> torch.device:
    """Where a collective's tensors must live: this process's GPU under NCCL, else the CPU (gloo)."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def guarded(info: Dist, work: Callable[..., T], *args, **kwargs) -> T:
    """``work`` on every rank (its share of a job whose result is then gathered), then one all-reduce of a
    failure flag before any rank enters the gather: when one rank fails, every rank stops at once (the
    failed one with its own error, the others with one line) instead of waiting in the gather."""
    result, error = None, None
    try:
        result = work(*args, **kwargs)
    except Exception as exc:  # re-raised below, after the others were told
        if not info.active:
            raise
        error = exc
    if info.active:
        flag = torch.tensor([0.0 if error is None else 1.0 + info.rank], device=_collective_device())
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if error is not None:
            raise error
        if flag.item() > 0:
            raise RankFailed(f"rank {int(flag.item()) - 1} failed (its own error is in its log); rank {info.rank} "
                             "stops with it")
    return result


def shutdown(info: Dist) -> None:
    if info.active and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: Dist) -> None:
    if info.active:
        dist.barrier()


def gather_rows(info: Dist, part: np.ndarray, total: int, chunk_rows: int = 8192) -> np.ndarray:
    """The full ``total`` x D array on every rank, where rank r holds rows ``r::world`` in ``part``.

    Sent as tensors a chunk of rows at a time (on the GPU under NCCL), never pickled: ``all_gather_object``
    of 761k x 2,048 float32 rows would briefly need world x the whole array on each GPU and several host
    copies per process; here each rank holds the result plus world x one chunk.
    """
    if not info.active:
        return part
    world = info.world
    device = _collective_device()
    per_rank = -(-total // world)
    out = np.zeros((total, part.shape[1]), part.dtype)
    for start in range(0, per_rank, chunk_rows):
        stop = min(start + chunk_rows, per_rank)
        local = torch.zeros((stop - start, part.shape[1]), dtype=torch.from_numpy(part[:0]).dtype, device=device)
        rows = part[start:stop]
        local[:len(rows)] = torch.from_numpy(np.ascontiguousarray(rows)).to(device)
        buffers = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(buffers, local)
        positions = np.arange(start, stop)
        for rank, buffer in enumerate(buffers):
            index = rank + world * positions
            valid = index < total
            out[index[valid]] = buffer.cpu().numpy()[valid]
    return out


def broadcast_object(info: Dist, obj):
    """Rank 0's ``obj`` on every rank."""
    if not info.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
