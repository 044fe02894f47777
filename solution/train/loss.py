"""Triplet loss on L2-normalised descriptors."""

from __future__ import annotations

import torch


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
                 margin: float = 0.1) -> torch.Tensor:
    """mean over (B, k) of relu(|a-p|^2 - |a-n_k|^2 + margin); shapes B x D, B x D, B x k x D."""
    d_pos = (anchor - positive).pow(2).sum(-1, keepdim=True)
    d_neg = (anchor.unsqueeze(1) - negatives).pow(2).sum(-1)
    return torch.relu(d_pos - d_neg + margin).mean()
