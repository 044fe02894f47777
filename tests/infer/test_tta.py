import math

import pytest
import torch

from solution.infer.tta import MultiScale, combine, parse_scales


def test_parse_scales():
    assert parse_scales(["1/sqrt2", 1, "sqrt2", "0.5"]) == pytest.approx([1 / math.sqrt(2), 1, math.sqrt(2), 0.5])


def test_combine_mean_and_gem_hand_computed():
    """Views (0.6, 0.8) and (1, 0): mean (0.8, 0.4) -> L2 (0.894427, 0.447214); GeM p=3:
    ((0.216 + 1) / 2)^(1/3) = 0.847216, ((0.512 + 0) / 2)^(1/3) = 0.634960 -> L2 (0.800187, 0.599750)."""
    views = torch.tensor([[[0.6, 0.8]], [[1.0, 0.0]]])
    assert torch.allclose(combine(views, "mean"), torch.tensor([[0.894427, 0.447214]]), atol=1e-5)
    assert torch.allclose(combine(views, "gem", 3.0), torch.tensor([[0.800187, 0.599750]]), atol=1e-5)
    one = combine(views[:1], "gem")
    assert torch.allclose(one, views[0], atol=1e-5)  # GeM of a single view is that view
    signed = combine(torch.tensor([[[-0.6, 0.8]], [[-1.0, 0.0]]]), "gem", 3.0)  # whitened: negative parts
    assert torch.allclose(signed, torch.tensor([[-0.800187, 0.599750]]), atol=1e-5)
    with pytest.raises(ValueError, match="mean or gem"):
        combine(views, "max")


class _Probe(torch.nn.Module):
    """Describes an image by its size and mean colour, so the views are visible in the output."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def forward(self, x):
        self.sizes.append(tuple(x.shape[-2:]))
        return torch.stack([x.mean((1, 2, 3)), x[..., : x.shape[-1] // 2].mean((1, 2, 3)) + 1], dim=1)


def test_multiscale_runs_every_scale_and_flip():
    probe = _Probe()
    out = MultiScale(probe, [1 / math.sqrt(2), 1.0, math.sqrt(2)], flip=True)(torch.rand(2, 3, 64, 96))
    assert probe.sizes == [(45, 68), (45, 68), (64, 96), (64, 96), (91, 136), (91, 136)]
    assert out.shape == (2, 2) and torch.allclose(out.norm(dim=1), torch.ones(2))
