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
