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

    from solution.train.distributed import Dist, gather_rows

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
