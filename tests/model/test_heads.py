import pytest
import torch

from solution.model import functional as LF
from solution.model.heads import HEADS, create_head


def test_functional_pooling():
    x = torch.rand(2, 3, 4, 5)
    assert torch.allclose(LF.mac(x), x.flatten(2).max(-1).values)
    assert torch.allclose(LF.spoc(x), x.flatten(2).mean(-1))
    assert torch.allclose(LF.gem(x, 1.0), LF.spoc(x.clamp(min=1e-6)), atol=1e-6)
    assert torch.allclose(LF.gem(x, 60.0), LF.mac(x), atol=0.05)  # large p approaches max


@pytest.mark.parametrize("name", sorted(HEADS))
def test_heads_are_normalised_and_multi_layer(name):
    head = create_head(name, [4, 6])
    out = head([torch.rand(3, 4, 5, 5), torch.rand(3, 6, 3, 3)])
    assert out.shape == (3, head.dim) == (3, 10)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)


def test_gem_p_is_learnable():
    head = create_head("gem", [4])
    head([torch.rand(2, 4, 3, 3)]).sum().backward()
    assert head.p.grad is not None and head.p.grad.abs().sum() > 0
    assert head.no_decay_parameters() == [head.p]


def test_unknown_head():
    with pytest.raises(KeyError, match="registered: gem, mac, remap, rmac, spoc"):
        create_head("nope", [4])


def test_rmac_is_remap_with_unit_weights():
    maps = [torch.rand(2, 4, 6, 8), torch.rand(2, 6, 3, 4)]
    assert torch.allclose(create_head("rmac", [4, 6])(maps), create_head("remap", [4, 6])(maps), atol=1e-5)


def test_remap_weights_set_and_stay_non_negative_under_training():
    head = create_head("remap", [4, 6])
    weights = torch.rand(2, head.num_regions) * 3
    head.set_region_weights(weights)
    assert torch.allclose(head.region_weights, weights.clamp(min=1e-4), atol=1e-4)
    plain = torch.nn.Parameter(weights.clone())  # the control: an unconstrained weight, same optimisation
    optimizer = torch.optim.SGD([*head.parameters(), plain], lr=100.0)
    for _ in range(5):  # drive every weight hard towards negative values
        optimizer.zero_grad()
        (head.region_weights.sum() + plain.sum()).backward()
        optimizer.step()
    assert (plain < 0).all()  # the push is strong enough to make any unconstrained weight negative
    assert (head.region_weights >= 0).all() and head.region_weights.max() < weights.min() + 1e-3
    with pytest.raises(ValueError, match="must be"):
        head.set_region_weights(torch.ones(3))


def test_remap_weights_change_the_descriptor():
    maps = [torch.rand(2, 4, 6, 8)]
    head = create_head("remap", [4])
    before = head(maps)
    weights = torch.zeros(1, head.num_regions)
    weights[0, -1] = 1.0  # only the whole image: REMAP reduces to MAC
    head.set_region_weights(weights)
    assert not torch.allclose(before, head(maps))
    assert torch.allclose(head(maps), create_head("mac", [4])(maps), atol=1e-3)
