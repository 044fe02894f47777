"""Every shipped real-data recipe builds, trains one step, describes images and reloads, on CPU.

The recipes target GPUs and GLDv2; here each runs on the tiny toy set with random weights at 64 px,
which exercises everything the recipe sets except its scale.
"""

import numpy as np
import pytest
import torch

from solution.config import load_config
from solution.infer.extract import extract_descriptors
from solution.model.net import load_checkpoint
from solution.train.loop import train

RECIPES = ["gldv2-resnet101-remap", "gldv2-efficientnet-remap", "gldv2-efficientnet-arcface", "kernel-2021"]
SMALL = ["competition=toy", "data.toy_size=tiny", "model.pretrained=none", "train.image_size=64",
         "infer.image_size=64", "infer.batch_size=4", "model.kl.images=16", "model.kl.pairs=50",
         "model.kl.image_size=64", "train.epochs=1", "train.tuples_per_epoch=2", "train.tuples_per_step=2",
         "train.neg_num=1", "train.pool_size=8", "train.val_landmarks=0", "train.eval_before=false",
         "train.transfer_check=false", "train.checkpoint_every=0", "run.workers=0"]
SCALED = {"model.whiten_dim=16"}  # whitening needs more training images than dimensions: 27 images here


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_trains_one_step_describes_and_reloads(recipe, tiny_root, tmp_path):
    full = load_config(recipe)
    whiten = list(SCALED) if full["model"]["whiten_dim"] else []
    cfg = load_config(recipe, [*SMALL, *whiten, f"data.root={tiny_root}", f"run.dir={tmp_path}"])
    for key in ("backbone", "head", "layers", "remap_layers", "final_map", "tap_relu"):
        assert cfg["model"][key] == full["model"][key]  # only the scale was changed for the test
    result = train(cfg)
    net, payload = load_checkpoint(result["checkpoint"])
    assert payload["epoch"] == 1 and net.meta["backbone"] == full["model"]["backbone"]
    paths = sorted((tiny_root / "toy" / "test").rglob("*.jpg"))[:3]
    rows, ok = extract_descriptors(net.eval(), paths, 64, 2, torch.device("cpu"), 0)
    assert ok.all() and rows.shape == (3, net.dim) and np.isfinite(rows).all()
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-3)
