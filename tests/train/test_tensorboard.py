import builtins
import logging
import sys
import types

from solution.config import load_config
from solution.train.loop import Trainer


def _trainer(tmp_path):
    return Trainer(load_config("toy-tiny", [f"run.dir={tmp_path}", "train.tensorboard=true"]))


def test_missing_tensorboard_is_one_warning(tmp_path, monkeypatch, caplog):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    trainer = _trainer(tmp_path)
    with caplog.at_level(logging.WARNING):
        trainer._open_tensorboard()
    assert trainer.tensorboard is None
    assert "tensorboard is not installed" in caplog.text


def test_epoch_rows_reach_tensorboard_when_installed(tmp_path, monkeypatch):
    written = []

    class FakeWriter:
        def __init__(self, folder):
            written.append(("open", folder))

        def add_scalar(self, key, value, step):
            written.append((key, value, step))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    trainer = _trainer(tmp_path)
    trainer._open_tensorboard()
    (tmp_path / "toy-tiny").mkdir(parents=True)
    trainer.log_epoch({"epoch": 1, "loss": 0.5, "val_map": None, "epoch_s": 3.0})
    assert ("train/loss", 0.5, 1) in written and ("train/epoch_s", 3.0, 1) in written
    assert not any(key == "train/val_map" for key, *_ in written[1:])
