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
    with pytest.raises(KeyError, match="registered: gem, mac, spoc"):
        create_head("nope", [4])
