"""Pooling as plain functions on N x C x H x W maps (cirtorch style); modules wrap them."""

from __future__ import annotations

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
