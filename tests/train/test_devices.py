"""torchrun ranks pick their GPU: more processes than GPUs on a node wrap around instead of failing."""

import torch

from solution import distributed


def test_local_rank_beyond_the_gpu_count_wraps_around(monkeypatch):
    chosen = []
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("RANK", "6")
    monkeypatch.setenv("LOCAL_RANK", "6")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)  # no process group here
    info = distributed.init_distributed("auto")
    assert chosen == [2] and (info.rank, info.world, info.local_rank) == (6, 8, 6)


def test_ddp_sends_no_buffers_every_forward(tmp_path):
    """Frozen BatchNorm has nothing to synchronise: DDP's per-forward buffer broadcast is off."""
    import torch.distributed as dist
    from torch import nn

    from solution.train.loop import wrap_ddp

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        model = wrap_ddp(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), torch.device("cpu"))
        assert model.broadcast_buffers is False
    finally:
        dist.destroy_process_group()
