import numpy as np
import pytest
import torch

from solution.model.functional import region_max_pool
from solution.model.regions import boxes_to_cells, region_grid


@pytest.mark.parametrize("height, width", [(5, 7), (12, 9), (1, 1)])
def test_equals_naive_per_box_amax(height, width):
    x = torch.randn(3, 4, height, width)
    cells = boxes_to_cells(region_grid(), height, width)
    ours = region_max_pool(x, cells)
    naive = torch.stack([x[:, :, y0:y1, x0:x1].amax(dim=(-2, -1)) for x0, y0, x1, y1 in cells], dim=1)
    assert ours.shape == (3, len(cells), 4)
    assert torch.equal(ours, naive)


def test_gradient_flows_to_the_max():
    x = torch.zeros(1, 1, 2, 2, requires_grad=True)
    with torch.no_grad():
        x[0, 0, 1, 1] = 5
    region_max_pool(x, np.array([[0, 0, 2, 2]])).sum().backward()
    assert x.grad[0, 0, 1, 1] == 1 and x.grad.sum() == 1


def test_the_gather_indices_are_made_once_per_grid_and_device():
    """A Python list as an index is a blocking host-to-device copy in every forward; the indices are cached."""
    from solution.model import functional

    cells = np.array([[0, 0, 3, 3], [1, 1, 4, 4], [0, 1, 3, 4]])
    x = torch.randn(2, 5, 4, 4)
    functional._cell_index_tensors.cache_clear()
    first = region_max_pool(x, cells)
    for _ in range(3):
        assert torch.equal(region_max_pool(x, cells), first)
    info = functional._cell_index_tensors.cache_info()
    assert info.misses == 1 and info.hits == 3
    naive = torch.stack([x[:, :, y0:y1, x0:x1].amax(dim=(-2, -1)) for x0, y0, x1, y1 in cells], dim=1)
    assert torch.equal(first, naive)


@pytest.mark.parametrize("height, width", [(5, 7), (24, 32), (1, 1)])
def test_region_gem_equals_naive_per_box_generalised_mean(height, width):
    from solution.model.functional import region_gem_pool

    x = torch.rand(2, 3, height, width, dtype=torch.float64) * 6
    cells = boxes_to_cells(region_grid(), height, width)
    ours = region_gem_pool(x, cells, 3.0)
    naive = torch.stack([x[:, :, y0:y1, x0:x1].clamp(min=1e-6).pow(3).mean(dim=(-2, -1)).pow(1 / 3)
                         for x0, y0, x1, y1 in cells], dim=1)
    assert ours.shape == (2, len(cells), 3)
    assert torch.allclose(ours.double(), naive, rtol=1e-5)


def test_region_gem_tends_to_the_max_and_every_cell_learns():
    from solution.model.functional import region_gem_pool

    x = torch.rand(1, 2, 6, 8) * 6
    cells = boxes_to_cells(region_grid(), 6, 8)
    low, high, top = region_gem_pool(x, cells, 3.0), region_gem_pool(x, cells, 30.0), region_max_pool(x, cells)
    assert (low <= high + 1e-5).all() and (high <= top + 1e-5).all()  # rises with p towards the max
    assert (high >= 0.85 * top).all()
    p = torch.tensor(3.0, requires_grad=True)
    leaf = x.clone().requires_grad_()
    region_gem_pool(leaf, np.array([[0, 0, 8, 6]]), p).sum().backward()
    assert (leaf.grad > 0).all()  # max pooling would pass gradient to one cell per channel
    assert p.grad is not None and torch.isfinite(p.grad)


def test_region_gem_heads_learn_one_p_per_layer():
    from solution.model.heads import create_head

    head = create_head("remap", [4, 6], {"regions": {"levels": 2, "overlap": 0.4, "reference": [8, 6],
                                                     "whole": True}, "remap_layers": "sum",
                                         "region_pool": "gem", "region_p": 4.0})
    assert head.region_p.shape == (2,) and torch.all(head.region_p == 4.0)
    assert head.no_decay_parameters() == [head.region_p]
    out = head([torch.rand(2, 4, 6, 8), torch.rand(2, 6, 3, 4)])
    assert out.shape == (2, 10) and torch.allclose(out.norm(dim=1), torch.ones(2))
    out.sum().backward()
    assert head.region_p.grad is not None and (head.region_p.grad != 0).all()
    plain = create_head("rmac", [4], {"regions": {"levels": 2, "overlap": 0.4, "reference": [8, 6], "whole": True}})
    assert plain.region_pool == "max" and plain.no_decay_parameters() == []
