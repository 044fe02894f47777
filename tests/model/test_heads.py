import numpy as np
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
    assert torch.allclose(head.region_weights, weights)
    plain = torch.nn.Parameter(weights.clone())  # the control: an unconstrained weight, same optimisation
    optimizer = torch.optim.SGD([*head.parameters(), plain], lr=100.0)
    for _ in range(5):  # drive every weight hard towards negative values
        optimizer.zero_grad()
        (head.region_weights.sum() + plain.sum()).backward()
        optimizer.step()
        head.project_()  # what training does after every step
    assert (plain < 0).all()  # the push is strong enough to make any unconstrained weight negative
    assert (head.weight == 0).all() and (head.region_weights == 0).all()
    with pytest.raises(ValueError, match="must be"):
        head.set_region_weights(torch.ones(3))


def test_a_remap_weight_near_zero_moves_as_fast_as_any_other():
    """The softplus parametrisation scaled a weight's gradient by 1 - e^-w: a region the KL start put at 0.02
    moved 50 times slower than one at 2. Plain projected weights take the same step at any value."""
    head = create_head("remap", [4])
    start = torch.ones(1, head.num_regions)
    start[0, 0], start[0, 1] = 0.02, 2.0
    head.set_region_weights(start)
    optimizer = torch.optim.SGD(head.region_parameters(), lr=0.01)
    for _ in range(10):  # a loss that asks every weight to grow
        optimizer.zero_grad()
        (-head.region_weights.sum()).backward()
        optimizer.step()
        head.project_()
    moved = head.region_weights[0] - start[0]
    assert torch.allclose(moved, torch.full_like(moved, 0.1), atol=1e-5)  # 10 steps x 0.01 each, for every weight
    at_zero = create_head("remap", [4])
    at_zero.set_region_weights(torch.zeros(1, at_zero.num_regions))
    (at_zero([torch.rand(2, 4, 6, 8)]) * torch.randn(2, 4)).sum().backward()
    assert at_zero.weight.grad.abs().sum() > 0  # a weight at 0 still gets its gradient


def test_a_checkpoint_with_softplus_weights_loads_as_the_same_weights():
    head = create_head("remap", [4, 6], layers="learned")
    raw = torch.randn(2, head.num_regions)
    head.load_state_dict({"raw_weights": raw, "raw_layer_weights": torch.zeros(2)})
    assert torch.allclose(head.region_weights, torch.nn.functional.softplus(raw))
    assert torch.allclose(head.layer_weights, torch.full((2,), float(np.log(2))))


def test_remap_weights_change_the_descriptor():
    maps = [torch.rand(2, 4, 6, 8)]
    head = create_head("remap", [4])
    before = head(maps)
    weights = torch.zeros(1, head.num_regions)
    weights[0, -1] = 1.0  # only the whole image: REMAP reduces to MAC
    head.set_region_weights(weights)
    assert not torch.allclose(before, head(maps))
    assert torch.allclose(head(maps), create_head("mac", [4])(maps), atol=1e-3)


def test_remap_sum_mode_lets_layer_weights_act_across_layers():
    maps = [torch.rand(2, 4, 6, 8), torch.rand(2, 6, 3, 4)]
    for mode, moves in (("sum", True), ("learned", False), ("l2", False)):
        head = create_head("remap", [4, 6], layers=mode)
        before = head(maps)
        weights = torch.ones(2, head.num_regions)
        weights[1] *= 5.0  # the second layer's regions all count five times more
        head.set_region_weights(weights)
        after = head(maps)
        if mode == "learned":  # the layer's mean weight moves into its learnable layer weight
            assert torch.allclose(head.layer_weights, torch.tensor([1.0, 5.0]), atol=1e-3)
            assert not torch.allclose(before, after, atol=1e-4)
        else:
            assert torch.allclose(before, after, atol=1e-5) != moves, mode
        if moves:  # the up-weighted layer now holds most of the unit norm
            assert (after[:, 4:].norm(dim=1) > after[:, :4].norm(dim=1)).all()


def test_remap_learned_layer_weights_get_gradients_and_no_decay():
    head = create_head("remap", [4, 6], layers="learned")
    maps = [torch.rand(2, 4, 6, 8), torch.rand(2, 6, 3, 4)]
    (head(maps) * torch.randn(2, head.dim)).sum().backward()
    assert head.layer_weight.grad.abs().min() > 1e-6
    assert head.region_parameters() == [head.weight, head.layer_weight]
    with pytest.raises(ValueError, match="layer mode"):
        create_head("remap", [4], layers="bogus")
