"""What a training run writes after each epoch: ``metrics.csv``, the curves PNG, TensorBoard scalars and the
console line. Rank 0 writes; the training driver only hands over the epoch's row."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

from ..atomic import atomic_path
from ..viz import training_curves

log = logging.getLogger(__name__)


def write_metrics_row(path: Path, row: dict) -> None:
    """Replace the rows of this epoch and later, then append: a resumed epoch never leaves a duplicate."""
    rows = []
    if path.is_file():
        with path.open(newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if int(r["epoch"]) < int(row["epoch"])]
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row), extrasaction="ignore")
        writer.writeheader()
        writer.writerows([*rows, row])


class EpochLog:
    """The run folder's per-epoch record. TensorBoard is opened on the first row when ``tensorboard`` is
    asked for and installed (a missing install is one warning, and the run goes on without it)."""

    def __init__(self, out: Path, epochs: int, tensorboard: bool):
        self.out, self.epochs, self.wants_tensorboard = out, epochs, tensorboard
        self.tensorboard = None

    def open_tensorboard(self) -> None:
        if not self.wants_tensorboard or self.tensorboard is not None:
            return
        self.wants_tensorboard = False  # asked once: a missing install is warned about once
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("train.tensorboard=true but tensorboard is not installed (pip install tensorboard); skipping")
            return
        self.tensorboard = SummaryWriter(str(self.out / "tensorboard"))

    def write(self, row: dict) -> None:
        """``row`` (its ``epoch`` key 1-based) into metrics.csv, the curves, TensorBoard and the console."""
        write_metrics_row(self.out / "metrics.csv", row)
        training_curves(self.out / "metrics.csv", self.out / "plots" / "curves.png")
        self.open_tensorboard()
        if self.tensorboard is not None:
            for key, value in row.items():
                if key != "epoch" and value is not None and not (isinstance(value, float) and math.isnan(value)):
                    self.tensorboard.add_scalar(f"train/{key}", value, row["epoch"])
        log.info("epoch %s/%d %s", row["epoch"], self.epochs,
                 " ".join(f"{k}={v}" for k, v in row.items() if k != "epoch"))

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None
