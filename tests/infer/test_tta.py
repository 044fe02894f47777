import math

import pytest
import torch

from solution.infer.tta import MultiScale, combine, parse_scales
from solution.model.functional import l2n


def test_parse_scales():
    assert parse_scales(["1/sqrt2", 1, "sqrt2", "0.5"]) == pytest.approx([1 / math.sqrt(2), 1, math.sqrt(2), 0.5])


def test_combine_mean_and_gem():
    views = l2n(torch.randn(3, 4, 8))
    assert torch.allclose(combine(views, "mean"), l2n(views.mean(0)))
    one = combine(views[:1], "gem")
    assert torch.allclose(one, views[0], atol=1e-5)  # GeM of a single view is that view
    assert torch.allclose(combine(views, "gem").norm(dim=1), torch.ones(4))
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
