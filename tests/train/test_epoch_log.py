"""solution/train/epoch_log.py: metrics.csv rows replaced on resume, curves drawn, TensorBoard optional."""

import builtins
import csv
import logging
import sys
import types

from solution.config import load_config
from solution.train.epoch_log import EpochLog, write_metrics_row
from solution.train.loop import Trainer


def test_missing_tensorboard_is_one_warning(tmp_path, monkeypatch, caplog):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    log = EpochLog(tmp_path, 2, tensorboard=True)
    with caplog.at_level(logging.WARNING):
        log.write({"epoch": 1, "loss": 0.5, "val_map": None, "epoch_s": 3.0})
        log.write({"epoch": 2, "loss": 0.4, "val_map": None, "epoch_s": 3.0})
    assert log.tensorboard is None
    assert caplog.text.count("tensorboard is not installed") == 1
    assert (tmp_path / "metrics.csv").is_file()


def test_epoch_rows_reach_tensorboard_when_installed(tmp_path, monkeypatch):
    written = []

    class FakeWriter:
        def __init__(self, folder):
            written.append(("open", folder))

        def add_scalar(self, key, value, step):
            written.append((key, value, step))

        def close(self):
            written.append(("close",))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    trainer = Trainer(load_config("toy-tiny", [f"run.dir={tmp_path}", "train.tensorboard=true"]))
    (tmp_path / "toy-tiny").mkdir(parents=True)
    trainer.log_epoch({"epoch": 1, "loss": 0.5, "val_map": None, "epoch_s": 3.0})
    assert written[0] == ("open", str(tmp_path / "toy-tiny" / "tensorboard"))
    assert ("train/loss", 0.5, 1) in written and ("train/epoch_s", 3.0, 1) in written
    assert not any(key == "train/val_map" for key, *_ in written[1:])
    trainer.epoch_log.close()
    assert written[-1] == ("close",)


def test_tensorboard_off_opens_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # importing it would fail
    log = EpochLog(tmp_path, 1, tensorboard=False)
    log.write({"epoch": 1, "loss": 0.5})
    assert log.tensorboard is None and not (tmp_path / "tensorboard").exists()


def test_resumed_epoch_replaces_its_row_and_later_ones(tmp_path):
    path = tmp_path / "metrics.csv"
    for epoch in (1, 2, 3):
        write_metrics_row(path, {"epoch": epoch, "loss": 1.0 / epoch})
    write_metrics_row(path, {"epoch": 2, "loss": 0.25})  # a run resumed inside epoch 2
    rows = list(csv.DictReader(path.open()))
    assert [(r["epoch"], r["loss"]) for r in rows] == [("1", "1.0"), ("2", "0.25")]


def test_each_row_redraws_the_curves(tmp_path):
    log = EpochLog(tmp_path, 2, tensorboard=False)
    log.write({"epoch": 1, "loss": 0.5, "val_map": 0.2})
    log.write({"epoch": 2, "loss": 0.4, "val_map": 0.3})
    assert (tmp_path / "plots" / "curves.png").stat().st_size > 0
