import torch

from solution.config import load_config
from solution.model import build_net, load_checkpoint, save_checkpoint


def test_checkpoint_rebuilds_exact_net(tmp_path):
    cfg = load_config("toy", ["model.layers=[-2,-1]"])["model"]
    net = build_net(cfg).eval()
    with torch.no_grad():
        net.head.p.fill_(4.0)
    path = save_checkpoint(tmp_path / "c.pt", net, epoch=3)
    rebuilt, payload = load_checkpoint(path)
    rebuilt.eval()
    x = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        assert torch.allclose(net(x), rebuilt(x), atol=1e-6)
    assert payload["epoch"] == 3 and rebuilt.meta["layers"] == [3, 4] and rebuilt.dim == 112 + 320


def test_gradients_reach_backbone_and_head():
    net = build_net(load_config("toy")["model"])
    net(torch.rand(2, 3, 64, 64)).sum().backward()
    assert net.backbone.conv_stem.weight.grad.abs().sum() > 0
    assert net.head.p.grad.abs().sum() > 0
