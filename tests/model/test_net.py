import torch

from solution.config import load_config
from solution.model import build_net, load_checkpoint, save_checkpoint


def test_checkpoint_rebuilds_exact_net(tmp_path):
    cfg = load_config("toy-gem", ["model.layers=[-2,-1]"])["model"]
    net = build_net(cfg).eval()
    with torch.no_grad():
        net.head.p.fill_(4.0)
    path = save_checkpoint(tmp_path / "c.pt", net, epoch=3)
    rebuilt, payload = load_checkpoint(path)
    rebuilt.eval()
    x = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        assert torch.allclose(net(x), rebuilt(x), atol=1e-6)
    assert payload["epoch"] == 3 and rebuilt.meta["layers"] == [3, 4] and rebuilt.dim == 112 + 1280


def _projection_loss(out: torch.Tensor) -> torch.Tensor:
    """A loss whose gradient is not identically 0 on L2-normalised outputs (their squared norm is constant,
    so ``out.pow(2).sum()`` would only give rounding noise)."""
    return out @ torch.linspace(-1, 1, out.shape[1])


def test_gradients_reach_backbone_and_head():
    net = build_net(load_config("toy-gem")["model"])
    _projection_loss(net(torch.rand(2, 3, 64, 64))).sum().backward()
    assert net.backbone.body.conv_stem.weight.grad.abs().max() > 1e-4
    assert net.head.p.grad.abs().max() > 1e-4


def _remap_cfg():
    return load_config("toy-remap", ["model.whiten_dim=64"])["model"]


def test_gradients_reach_backbone_region_weights_and_whitening():
    net = build_net(_remap_cfg())
    _projection_loss(net(torch.rand(2, 3, 64, 64))).sum().backward()
    assert net.backbone.body.conv_stem.weight.grad.abs().max() > 1e-4
    assert net.head.weight.grad.abs().max() > 1e-4
    assert net.whiten.weight.grad.abs().max() > 1e-4 and net.whiten.bias.grad.abs().max() > 1e-4


def test_remap_checkpoint_holds_regions_kl_and_whitening(tmp_path):
    net = build_net(_remap_cfg()).eval()
    net.head.set_region_weights(torch.rand(2, net.head.num_regions) + 0.5)
    net.set_whitening(torch.randn(64, net.meta["pooled_dim"]), torch.randn(64))
    net.meta.update(kl_fitted=True, kl=net.head.region_weights.tolist())
    rebuilt, _ = load_checkpoint(save_checkpoint(tmp_path / "r.pt", net))
    rebuilt.eval()
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        assert torch.allclose(net(x), rebuilt(x), atol=1e-5)
    assert rebuilt.meta["whitening_fitted"] and rebuilt.meta["kl_fitted"] and len(rebuilt.meta["regions"]) == 41
    assert net(x).shape == (1, 64)


def test_uint8_images_describe_as_their_float_equivalent():
    """The loaders send uint8; the net scales it on its own device, to the same descriptor as floats."""
    net = build_net(load_config("toy-gem")["model"]).eval()
    pixels = torch.randint(0, 256, (2, 3, 64, 96), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(net(pixels), net(pixels.float() / 255), atol=1e-6)


def test_any_garbage_as_checkpoint_is_one_weight_error(tmp_path):
    """Random bytes reach the unpickler's internals in many ways (IndexError, KeyError, ...): all one error."""
    import numpy as np
    import pytest

    from solution.model.backbone import WeightError

    path = tmp_path / "garbage.pt"
    for seed in range(40):
        path.write_bytes(np.random.default_rng(seed).bytes(int(np.random.default_rng(seed).integers(1, 5000))))
        with pytest.raises(WeightError, match="not a readable PyTorch file"):
            load_checkpoint(path)


def test_a_pickle_with_code_is_refused_as_such(tmp_path):
    import os

    import pytest

    from solution.model.backbone import WeightError

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"meta": Exploit()}, tmp_path / "evil.pt")
    with pytest.raises(WeightError, match="refused it: it holds code"):
        load_checkpoint(tmp_path / "evil.pt")
