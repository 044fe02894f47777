"""Triplet loss on L2-normalised descriptors."""

from __future__ import annotations

import torch


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
                 margin: float = 0.1) -> torch.Tensor:
    """mean over (B, k) of relu(|a-p|^2 - |a-n_k|^2 + margin); shapes B x D, B x D, B x k x D."""
    d_pos = (anchor - positive).pow(2).sum(-1, keepdim=True)
    d_neg = (anchor.unsqueeze(1) - negatives).pow(2).sum(-1)
    return torch.relu(d_pos - d_neg + margin).mean()


@torch.no_grad()
def triplet_stats(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
                  margin: float = 0.1) -> dict[str, torch.Tensor]:
    """Mean squared positive and negative distances, and the fraction of negatives already past the margin,
    as 0-d tensors on the descriptors' device (read back with the step's other figures, not one by one)."""
    d_pos = (anchor - positive).pow(2).sum(-1, keepdim=True)
    d_neg = (anchor.unsqueeze(1) - negatives).pow(2).sum(-1)
    return {"d_pos": d_pos.mean(), "d_neg": d_neg.mean(), "easy_frac": (d_neg > d_pos + margin).float().mean()}
