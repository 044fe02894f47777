"""Training steps never wait for the GPU one by one: their figures stay on the device and are read back in
one transfer every ``train.sync_every`` steps (and before every save)."""

import pytest
import torch

from solution.cli import main
from solution.config import load_config
from solution.model import build_net
from solution.train import loop
from solution.train.loop import Trainer, freeze_batchnorm


def test_a_training_step_reads_nothing_back_from_the_device(tmp_path, monkeypatch):
    cfg = load_config("toy-tiny", ["model.pretrained=none", "run.device=cpu", f"run.dir={tmp_path}"])
    trainer = Trainer(cfg)
    net = build_net(cfg["model"])
    net.train()
    freeze_batchnorm(net.backbone)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3)  # Adam reads its step count on the host
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    batch = torch.randint(0, 256, (2, 2 + cfg["train"]["neg_num"], 3, 64, 64), dtype=torch.uint8)

    def synchronising(*args, **kwargs):
        pytest.fail("a host synchronisation inside train_step")

    for name in ("item", "tolist", "__float__", "__bool__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, synchronising)
    figures = trainer.train_step(net, optimizer, scaler, [batch[:1], batch[1:]], 2, epoch=0)
    monkeypatch.undo()
    assert set(figures) == {"loss", "finite", "d_pos", "d_neg", "easy_frac"}
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in figures.values()) and bool(figures["finite"])


def test_figures_come_back_once_every_sync_every_steps(tiny_root, tmp_path, monkeypatch):
    flushed = []
    real = Trainer.flush

    def counting(self, pending, steps, epoch):
        if pending:
            flushed.append(len(pending))
        return real(self, pending, steps, epoch)

    monkeypatch.setattr(Trainer, "flush", counting)
    args = ["train", "--config", "toy-tiny", f"data.root={tiny_root}", f"run.dir={tmp_path}", "run.workers=0",
            "train.epochs=1", "train.tuples_per_epoch=12", "train.tuples_per_step=2", "train.sync_every=4",
            "train.eval_before=false", "train.val_landmarks=0"]
    assert main(args) == 0
    assert sum(flushed) >= 4 and flushed[0] == 4 and all(n <= 4 for n in flushed)
    assert len(flushed) == -(-sum(flushed) // 4)  # one transfer per 4 steps, the epoch's tail in one more


def test_the_loss_module_returns_device_figures():
    a, p, n = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 2, 4)
    stats = loop.triplet_stats(a, p, n, 0.1)
    assert all(isinstance(v, torch.Tensor) for v in stats.values())
