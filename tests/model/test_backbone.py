import pytest
import torch

from solution.config import ConfigError
from solution.model.backbone import WeightError, create_backbone, normalisation, resolve_layers


def test_resolve_layers():
    assert resolve_layers(5, [-2, -1]) == (3, 4)
    assert resolve_layers(5, [4, -1]) == (4,)
    with pytest.raises(ConfigError, match="out of range"):
        resolve_layers(5, [7])


def test_package_weights_are_imagenet():
    model, layers = create_backbone("tf_efficientnet_lite0", [-1], "package")
    random_model, _ = create_backbone("tf_efficientnet_lite0", [-1], "none")
    assert layers == (4,)
    assert not torch.equal(model.conv_stem.weight, random_model.conv_stem.weight)
    assert normalisation("tf_efficientnet_lite0", "package") == ((0.5,) * 3, (0.5,) * 3)


def test_local_file_round_trip_and_mismatch(tmp_path):
    model, _ = create_backbone("tf_efficientnet_lite0", [-1], "package")
    path = tmp_path / "w.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    loaded, _ = create_backbone("tf_efficientnet_lite0", [-1], "file", str(path))
    assert torch.equal(loaded.conv_stem.weight, model.conv_stem.weight)
    bad = dict(model.state_dict())
    bad["conv_stem.weight"] = torch.zeros(1)
    del bad["bn1.weight"]
    torch.save(bad, path)
    with pytest.raises(WeightError, match=r"missing 1 keys, e\.g\. bn1\.weight.*conv_stem\.weight"):
        create_backbone("tf_efficientnet_lite0", [-1], "file", str(path))


def test_bad_sources():
    with pytest.raises(ConfigError, match="only serves"):
        create_backbone("resnet18", [-1], "package")
    with pytest.raises(ConfigError, match="not a timm model"):
        create_backbone("resnet_nope", [-1], "none")
    with pytest.raises(WeightError, match="does not exist"):
        create_backbone("resnet18", [-1], "file", "/nope.pt")


def test_final_map_tap_is_the_networks_own_end():
    import timm

    tapped, _ = create_backbone("tf_efficientnet_lite0", [-2, -1], "none", final_map=True)
    stages, _ = create_backbone("tf_efficientnet_lite0", [-2, -1], "none")
    stages.load_state_dict({k: v for k, v in tapped.body.state_dict().items() if k in stages.state_dict()})
    whole = timm.create_model("tf_efficientnet_lite0", num_classes=0)
    whole.load_state_dict(tapped.body.state_dict())
    tapped.eval(), stages.eval(), whole.eval()
    x = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        maps, reference, end = tapped(x), stages(x), whole.forward_features(x)
    assert tapped.feature_info.channels() == [112, 1280]
    assert torch.equal(maps[0], reference[0])        # an inner tap is the stage's own output
    assert torch.allclose(maps[1], end) and maps[1].min() >= 0   # head conv + BN + ReLU6
    assert reference[1].min() < 0                     # the stage it replaces is signed
    inner, _ = create_backbone("tf_efficientnet_lite0", [-3, -2], "none", final_map=True)
    assert inner.feature_info.channels() == [40, 112]  # without the last stage nothing is replaced


def test_tap_relu_makes_every_map_non_negative():
    from solution.config import load_config
    from solution.model.net import build_net

    for relu in (True, False):
        cfg = load_config("toy", ["model.pretrained=none", "model.layers=[-2,-1]",  # the inner tap is signed
                                  f"model.tap_relu={str(relu).lower()}"])["model"]
        maps = build_net(cfg).eval().features(torch.rand(1, 3, 96, 128))
        assert (min(float(m.min()) for m in maps) >= 0) == relu


def test_a_final_map_net_that_stops_early_has_no_unused_parameters():
    """model.final_map with taps that stop before the last stage: the stages after them and the head never run.
    Under DDP such parameters fail the second step; they are pruned, so every parameter gets a gradient."""
    import torch

    from solution.model.backbone import create_backbone

    body, _ = create_backbone("tf_efficientnet_lite0", [-3, -2], "none", final_map=True)
    maps = body(torch.randn(1, 3, 64, 64))
    sum(m.sum() for m in maps).backward()
    unused = [name for name, p in body.named_parameters() if p.grad is None]
    assert unused == [] and len(maps) == 2


def test_uncap_final_lifts_relu6_and_keeps_the_map_below_the_cap():
    capped, _ = create_backbone("tf_efficientnet_lite0", [-1], "package", final_map=True)
    uncapped, _ = create_backbone("tf_efficientnet_lite0", [-1], "package", final_map=True, uncap_final=True)
    assert capped.final_cap == 6.0 and uncapped.final_cap is None
    capped.eval(), uncapped.eval()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 128, 160) * 2
    with torch.no_grad():
        low, high = capped(x)[-1], uncapped(x)[-1]
    assert float(low.max()) <= 6.0 and float(high.max()) > 6.0  # ImageNet weights saturate lite0's ReLU6
    below = high < 6.0
    assert torch.equal(low[below], high[below])
    resnet, _ = create_backbone("resnet18", [-1], "none", final_map=True)
    assert resnet.final_cap is None  # a ReLU ends it: nothing to lift
    with pytest.raises(ConfigError, match="final_map=true"):
        create_backbone("tf_efficientnet_lite0", [-1], "none", uncap_final=True)
