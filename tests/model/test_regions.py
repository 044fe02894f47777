import numpy as np
import pytest

from solution.model.regions import boxes_to_cells, region_grid, rmac_regions


def test_rmac_rule_gives_40_regions_on_32x24():
    boxes = rmac_regions(32, 24, levels=4)
    assert len(boxes) == 40
    per_level = [2, 6, 12, 20]  # (l + 1) * l on a 4:3 map
    sides = boxes[:, 2] - boxes[:, 0]
    assert [int((sides == s).sum()) for s in sorted(set(sides), reverse=True)] == per_level
    assert (boxes[:, [0, 1]] >= 0).all() and (boxes[:, 2] <= 32).all() and (boxes[:, 3] <= 24).all()


def test_grid_adds_whole_image_and_is_relative():
    grid = region_grid()
    assert grid.shape == (41, 4)
    assert grid[-1].tolist() == [0, 0, 1, 1]
    assert (grid >= 0).all() and (grid <= 1).all()
    assert len(region_grid(levels=3, whole=False)) == 20


@pytest.mark.parametrize("height, width", [(1, 1), (2, 3), (5, 5), (7, 12), (24, 32), (40, 17)])
def test_cells_never_empty_and_inside(height, width):
    cells = boxes_to_cells(region_grid(), height, width)
    assert (cells[:, 2] > cells[:, 0]).all() and (cells[:, 3] > cells[:, 1]).all()
    assert (cells[:, [0, 1]] >= 0).all() and (cells[:, 2] <= width).all() and (cells[:, 3] <= height).all()
    assert cells[-1].tolist() == [0, 0, width, height]


def test_exact_on_reference_map():
    cells = boxes_to_cells(region_grid(), 24, 32)
    assert np.array_equal(cells[:-1], rmac_regions(32, 24, 4).astype(np.int64))
