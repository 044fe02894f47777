"""The precision each GPU gets, resuming across gradient-scaler states, and the device each rank picks
(torch.cuda mocked: this machine has no GPU)."""

import pytest
import torch

from solution import runtime
from solution.train.loop import amp_dtype, restore_scaler

CUDA = torch.device("cuda", 0)


@pytest.mark.parametrize(("gpu", "capability", "dtype"), [
    ("P100", (6, 0), torch.float16), ("V100", (7, 0), torch.float16), ("T4", (7, 5), torch.float16),
    ("A100", (8, 0), torch.bfloat16), ("L4", (8, 9), torch.bfloat16), ("H100", (9, 0), torch.bfloat16),
])
def test_bf16_only_where_the_gpu_computes_in_it(gpu, capability, dtype, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # counts emulation: not asked
    assert amp_dtype(CUDA, "auto", capability) == dtype, gpu
    assert amp_dtype(CUDA, "off", capability) is None
    assert amp_dtype(torch.device("cpu"), "auto") is None


def test_resume_across_scaler_states():
    enabled = torch.amp.GradScaler("cpu", enabled=True, init_scale=1024.0)
    restore_scaler(enabled, {})  # saved by a bf16 or CPU run (scaler off): a fresh scaler, no error
    assert enabled.get_scale() == 1024.0
    saved = torch.amp.GradScaler("cpu", enabled=True, init_scale=64.0)
    saved._lazy_init_scale_growth_tracker(torch.device("cpu"))
    restore_scaler(enabled, saved.state_dict())
    assert enabled.get_scale() == 64.0
    disabled = torch.amp.GradScaler("cpu", enabled=False)
    restore_scaler(disabled, saved.state_dict())  # an fp16 run resumed on a bf16 GPU: nothing to restore
    assert not disabled.is_enabled()
    with pytest.raises(RuntimeError):  # what the plain call did
        torch.amp.GradScaler("cpu", enabled=True).load_state_dict({})


@pytest.fixture
def eight_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)


def test_each_torchrun_rank_takes_its_own_gpu(eight_gpus, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "5")
    assert runtime.resolve_device("auto") == torch.device("cuda", 5)
    assert runtime.resolve_device("cuda") == torch.device("cuda", 5)
    assert runtime.resolve_device("cpu") == torch.device("cpu")
    monkeypatch.delenv("LOCAL_RANK")
    assert runtime.resolve_device("auto") == torch.device("cuda")
    assert runtime.resolve_device("cuda:2") == torch.device("cuda", 2)


def test_data_workers_share_the_cores_between_the_gpus(monkeypatch):
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 16)
    assert runtime.data_workers(3) == 3  # a configured number is kept
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # torchrun, 8 processes on this node
    assert runtime.data_workers(None) == 2
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # one process driving two GPUs (DataParallel)
    assert runtime.data_workers(None) == 16


def test_the_collective_timeout_is_the_configured_one(monkeypatch):
    from datetime import timedelta

    from solution import distributed

    seen = {}
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group",
                        lambda backend, **kw: seen.update(backend=backend, **kw))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = distributed.init_distributed("cpu", timeout_min=7)
    assert (info.rank, info.world, info.local_rank) == (1, 2, 1)
    assert seen == {"backend": "gloo", "timeout": timedelta(minutes=7)}
