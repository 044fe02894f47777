"""Pooling as plain functions on N x C x H x W maps (cirtorch style); modules wrap them."""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F


def mac(x: torch.Tensor) -> torch.Tensor:
    """Max over the spatial grid: N x C."""
    return x.amax(dim=(-2, -1))


def spoc(x: torch.Tensor) -> torch.Tensor:
    """Sum-pooling (mean, which is the same after L2): N x C."""
    return x.mean(dim=(-2, -1))


def gem(x: torch.Tensor, p: torch.Tensor | float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalised mean, (mean x^p)^(1/p), with x clamped to eps: N x C."""
    return x.clamp(min=eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


def l2n(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return F.normalize(x, p=2, dim=-1, eps=eps)


@functools.lru_cache(maxsize=256)
def _cell_ranges(cells: tuple) -> tuple[list, list, list, list]:
    """(column ranges, row ranges, each cell's row-range index, its column-range index) of a cell tuple."""
    col_ranges = sorted({(a, b) for a, _, b, _ in cells})
    row_ranges = sorted({(a, b) for _, a, _, b in cells})
    col_index = {r: i for i, r in enumerate(col_ranges)}
    row_index = {r: i for i, r in enumerate(row_ranges)}
    return (col_ranges, row_ranges, [row_index[(c[1], c[3])] for c in cells],
            [col_index[(c[0], c[2])] for c in cells])


@functools.lru_cache(maxsize=256)
def _cell_index_tensors(cells: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The gather's row and column indices, made on ``device`` once per (grid, feature-map size, device): a
    Python list as an index would be a blocking host-to-device copy in every forward of every layer."""
    _, _, rows, cols = _cell_ranges(cells)
    return (torch.tensor(rows, dtype=torch.long, device=device), torch.tensor(cols, dtype=torch.long, device=device))


def _separable_region_pool(x: torch.Tensor, cells: np.ndarray, reduce) -> torch.Tensor:
    """``reduce(t, dim)`` over each box of ``cells``: N x C x H x W -> N x R x C. Separable and batched: over
    each distinct column range, then each distinct row range, then a gather. The only Python loops run over
    the few distinct ranges, never over images or channels; exact for max and for the mean of equal-width
    parts."""
    key = tuple(tuple(int(v) for v in cell) for cell in cells)
    col_ranges, row_ranges, _, _ = _cell_ranges(key)
    if type(x) is torch.Tensor:
        rows, cols = _cell_index_tensors(key, x.device)
    else:  # fake tensors (`plan`) belong to one fake mode: never cache them for later real forwards
        rows, cols = _cell_index_tensors.__wrapped__(key, x.device)
    by_cols = torch.stack([reduce(x[..., a:b], -1) for a, b in col_ranges], dim=-1)       # N C H Xu
    grid = torch.stack([reduce(by_cols[..., a:b, :], -2) for a, b in row_ranges], dim=-2)  # N C Yu Xu
    return grid[:, :, rows, cols].transpose(1, 2)


def region_max_pool(x: torch.Tensor, cells: np.ndarray) -> torch.Tensor:
    """Max over each box of ``cells`` (R x 4 integer x0, y0, x1, y1): N x C x H x W -> N x R x C."""
    return _separable_region_pool(x, cells, lambda t, dim: t.amax(dim=dim))


def region_gem_pool(x: torch.Tensor, cells: np.ndarray, p: torch.Tensor | float = 3.0,
                    eps: float = 1e-6) -> torch.Tensor:
    """Generalised mean over each box of ``cells``: N x C x H x W -> N x R x C.

    ``region_max_pool``'s smooth counterpart (p -> inf is the max, p = 1 the mean): every cell of a region
    passes gradient in proportion to its share of the p-th power sum, where max pooling passes it to one
    cell alone (and to none when that cell sits at a capped activation's ceiling). The mean of a box is the
    mean of its column means (each row of a box has the same width), so it is exact. Computed in float32: a
    p-th power mean in bfloat16 would round away most of a region's spread.
    """
    powered = x.float().clamp(min=eps).pow(p)
    means = _separable_region_pool(powered, cells, lambda t, dim: t.mean(dim=dim))
    return means.pow(1.0 / p).to(x.dtype)
