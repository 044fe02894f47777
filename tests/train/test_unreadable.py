"""A corrupt training image is named in one warning per run (it used to be warned about at KL estimation,
whitening, every mining pass and every training step that read it) and counted per epoch in metrics.csv."""

import csv
import logging
import shutil

from solution.cli import main
from solution.data.gldv2 import image_path, read_train_clean


def test_a_corrupt_training_image_is_named_once_per_run(tiny_root, tmp_path, caplog):
    root = tmp_path / "inputs"
    shutil.copytree(tiny_root / "toy", root / "toy")
    # every listed train image is read by mining (pool) and KL: pick one in train_clean.csv
    victim = read_train_clean(root / "toy/train_clean.csv")["id"].iloc[0]
    image_path(root / "toy", "train", victim).write_bytes(b"\xff\xd8\xff broken")
    args = ["train", "--config", "toy-remap", f"data.root={root}", "data.toy_size=tiny", f"run.dir={tmp_path}/runs",
            "run.workers=0", "train.epochs=2", "train.tuples_per_epoch=12", "train.tuples_per_step=2",
            "train.neg_num=2", "train.pool_size=40", "train.val_landmarks=0", "train.eval_before=false",
            "train.image_size=64", "infer.image_size=64", "model.kl.images=40", "model.kl.pairs=100",
            "model.kl.image_size=64", "model.whiten_dim=8"]
    with caplog.at_level(logging.WARNING):
        assert main(args) == 0
    named = [r for r in caplog.records if r.getMessage().startswith("skipping") and victim in r.getMessage()]
    assert len(named) == 1, [r.getMessage() for r in named]
    rows = list(csv.DictReader(open(tmp_path / "runs/toy-remap/metrics.csv")))
    assert len(rows) == 2
