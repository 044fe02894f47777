import torch

from solution.config import load_config
from solution.model import build_net
from solution.model.export import export_torchscript, load_torchscript


def test_torchscript_matches_the_net(tmp_path):
    net = build_net(load_config("toy-remap", ["model.whiten_dim=32"])["model"]).eval()
    net.head.set_region_weights(torch.rand(2, net.head.num_regions) + 0.1)
    path = export_torchscript(net, tmp_path / "remap.pt", 96, 128)
    scripted = load_torchscript(path)
    x = torch.rand(3, 3, 96, 128)
    with torch.no_grad():
        ours, theirs = net(x), scripted(x)
    assert theirs.shape == (3, 32)
    assert torch.allclose(ours, theirs, atol=1e-5)
