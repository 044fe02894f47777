"""Frozen BatchNorm and the optimiser's learning-rate groups."""

import torch
from torch import nn

from solution.config import load_config
from solution.model import build_net
from solution.train.loop import freeze_batchnorm, make_optimizer


def _net():
    return build_net(load_config("toy-remap", ["model.whiten_dim=32"])["model"])


def test_frozen_batchnorm_keeps_its_statistics_in_train_mode():
    net = _net()
    net.train()
    freeze_batchnorm(net.backbone)
    norms = [m for m in net.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and not any(m.training for m in norms)
    before = [m.running_mean.clone() for m in norms]
    net(torch.rand(2, 3, 64, 64) * 5)
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, norms))
    net.train()  # without the freeze, train mode updates them
    net(torch.rand(2, 3, 64, 64) * 5)
    assert any(not torch.equal(b, m.running_mean) for b, m in zip(before, norms))


def test_learning_rate_groups():
    net = _net()
    cfg = load_config("toy-remap", ["train.lr=0.001", "train.head_lr_mult=10", "train.whiten_lr_mult=0.5",
                                    "train.weight_decay=0.01", "train.region_lr=0.02"])["train"]
    groups = make_optimizer(net, cfg).param_groups
    owner = {}
    for group in groups:
        for p in group["params"]:
            assert id(p) not in owner  # each parameter in exactly one group
            owner[id(p)] = group
    assert set(owner) == {id(p) for p in net.parameters()}
    backbone = owner[id(net.backbone.body.conv_stem.weight)]
    region = owner[id(net.head.weight)]
    whiten = owner[id(net.whiten.weight)]
    assert (backbone["lr"], backbone["weight_decay"]) == (0.001, 0.01)
    assert region["lr"] == 0.02 and region["weight_decay"] == 0.0  # their own rate; no decay pulling them to 0
    assert whiten["lr"] == 0.0005 and whiten["weight_decay"] == 0.0
