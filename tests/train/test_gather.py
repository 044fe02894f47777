"""gather_rows: every rank's strided rows back in order, as tensors in chunks (two gloo processes)."""

import os
import socket

import numpy as np
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank(rank: int, world: int, port: int, total: int, out_dir: str) -> None:
    import torch.distributed as dist

    from solution.distributed import Dist, gather_rows

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    full = np.arange(total * 3, dtype=np.float32).reshape(total, 3)
    out = gather_rows(Dist(rank, world, rank), full[rank::world], total, chunk_rows=2)  # several chunks
    np.save(os.path.join(out_dir, f"{rank}.npy"), out)
    dist.destroy_process_group()


def test_two_ranks_get_every_row_in_order_with_uneven_shares(tmp_path):
    total, world = 11, 2  # rank 0 holds 6 rows, rank 1 holds 5
    mp.spawn(_rank, args=(world, _free_port(), total, str(tmp_path)), nprocs=world, join=True)
    expected = np.arange(total * 3, dtype=np.float32).reshape(total, 3)
    for rank in range(world):
        assert np.array_equal(np.load(tmp_path / f"{rank}.npy"), expected)


def _failing_rank(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    from solution.distributed import Dist, RankFailed, gather_rows, guarded

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    info = Dist(rank, world, rank)

    def share():
        if rank == 1:
            raise MemoryError("CUDA out of memory on rank 1")
        return np.zeros((2, 3), np.float32)

    try:
        gather_rows(info, guarded(info, share), 4)
        outcome = "gathered"
    except RankFailed as exc:
        outcome = f"RankFailed: {exc}"
    except MemoryError as exc:
        outcome = f"own error: {exc}"
    with open(os.path.join(out_dir, f"{rank}.txt"), "w") as handle:
        handle.write(outcome)
    dist.destroy_process_group()


def test_a_rank_that_fails_its_share_stops_every_rank_before_the_gather(tmp_path):
    """Without the flag, rank 0 would wait in the gather until the collective timeout (forever under NCCL)."""
    mp.spawn(_failing_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    assert (tmp_path / "1.txt").read_text() == "own error: CUDA out of memory on rank 1"
    assert (tmp_path / "0.txt").read_text().startswith("RankFailed: rank 1 failed")
