"""Pooling as plain functions on N x C x H x W maps (cirtorch style); modules wrap them."""

from __future__ import annotations

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


def region_max_pool(x: torch.Tensor, cells: np.ndarray) -> torch.Tensor:
    """Max over each box of ``cells`` (R x 4 integer x0, y0, x1, y1): N x C x H x W -> N x R x C.

    Separable and batched: a max over each distinct column range, then over each
    distinct row range, then a gather. The only Python loops run over the few
    distinct ranges, never over images or channels.
    """
    col_ranges = sorted({(int(a), int(b)) for a, b in cells[:, [0, 2]]})
    row_ranges = sorted({(int(a), int(b)) for a, b in cells[:, [1, 3]]})
    col_index = {r: i for i, r in enumerate(col_ranges)}
    row_index = {r: i for i, r in enumerate(row_ranges)}
    by_cols = torch.stack([x[..., a:b].amax(dim=-1) for a, b in col_ranges], dim=-1)       # N C H Xu
    grid = torch.stack([by_cols[..., a:b, :].amax(dim=-2) for a, b in row_ranges], dim=-2)  # N C Yu Xu
    rows = [row_index[(int(c[1]), int(c[3]))] for c in cells]
    cols = [col_index[(int(c[0]), int(c[2]))] for c in cells]
    return grid[:, :, rows, cols].transpose(1, 2)
