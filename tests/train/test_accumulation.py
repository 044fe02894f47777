"""A step's gradient is the mean over its global batch, however the batch is split into forwards."""

import torch

from solution.config import load_config
from solution.model import build_net
from solution.train.loop import Trainer, freeze_batchnorm


def _gradients(trainer, net, forwards, global_tuples):
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)  # the step changes nothing: the gradients stay
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    trainer.train_step(net, optimizer, scaler, forwards, global_tuples, epoch=0)
    return [p.grad.clone() for p in net.parameters() if p.grad is not None]


def test_four_forwards_of_one_tuple_give_the_gradient_of_one_forward_of_four(tmp_path):
    cfg = load_config("toy-tiny", ["model.pretrained=none", "run.device=cpu", f"run.dir={tmp_path}",
                                   "train.grad_clip=1e9"])
    trainer = Trainer(cfg)
    torch.manual_seed(0)
    net = build_net(cfg["model"])
    net.train()
    freeze_batchnorm(net.backbone)  # as in training: BatchNorm does not depend on the batch
    batch = torch.randint(0, 256, (4, 2 + cfg["train"]["neg_num"], 3, 64, 64), dtype=torch.uint8)
    whole = _gradients(trainer, net, [batch], 4)
    split = _gradients(trainer, net, [batch[i:i + 1] for i in range(4)], 4)
    assert len(whole) == len(split) > 10
    for a, b in zip(whole, split):
        # float32 sums in another order: elements near zero differ by a few ulps of the tensor's scale
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * float(a.abs().max()))
    assert any(a.abs().max() > 0 for a in whole)
    # half the global batch on this rank (world 1 here): each forward weighs by its share of the global count
    half = _gradients(trainer, net, [batch[:2]], 4)
    only = _gradients(trainer, net, [batch[:2]], 2)
    assert all(torch.allclose(h * 2, o, rtol=1e-4, atol=1e-5 * float(o.abs().max())) for h, o in zip(half, only))
