"""Metric-learning losses on L2-normalised descriptors: the triplet, and ArcFace with its GLR-winning variants.

Functional code first (cirtorch style); :class:`MarginClassifier` is the thin module that holds the class
centres. ArcFace (Deng et al. 2019) adds an angular margin m to the target class only: the target logit is
s * cos(theta_y + m), every other logit s * cos(theta_j). Sub-center ArcFace (Deng et al. 2020) keeps k
centres per class and takes the cosine of the nearest. Dynamic margins (GLR 2020 recognition 3rd, GLR 2021
1st) give rare classes a larger margin: m_c = b + a * (n_c^-1/4 scaled to [0, 1] over the classes), as the
2021 winners' code computes it, so the most frequent class gets b and the rarest a + b.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


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


def dynamic_margins(counts: np.ndarray, a: float, b: float, power: float = 0.25) -> np.ndarray:
    """Per-class margins b + a * minmax(n_c^-power): b for the most frequent class, a + b for the rarest.
    Classes that are all equally frequent all get a + b (each is as rare as the rarest)."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.size == 0 or (counts <= 0).any():
        raise ValueError("dynamic margins need a positive image count for every class")
    rarity = counts ** -power
    spread = rarity.max() - rarity.min()
    scaled = (rarity - rarity.min()) / spread if spread > 0 else np.ones_like(rarity)
    return b + a * scaled


def subcenter_cosine(embeddings: torch.Tensor, centres: torch.Tensor, subcenters: int) -> torch.Tensor:
    """B x C cosines: each class's best of its ``subcenters`` centres (``centres``: C*k x D, class-major)."""
    cosine = F.linear(F.normalize(embeddings, dim=-1), F.normalize(centres, dim=-1))
    if subcenters > 1:
        cosine = cosine.view(cosine.shape[0], -1, subcenters).amax(dim=-1)
    return cosine


def arcface_logits(cosine: torch.Tensor, labels: torch.Tensor, margins: torch.Tensor | float,
                   scale: float) -> torch.Tensor:
    """s * cos(theta + m_y) at each row's target class, s * cos(theta) elsewhere.

    ``margins``: one per class (C) or a number. Past theta = pi - m, cos(theta + m) would rise again; there
    the target logit is cos(theta) - m sin(m) instead (insightface's rule), which keeps falling with theta.
    """
    m = torch.as_tensor(margins, dtype=cosine.dtype, device=cosine.device)
    m = m[labels] if m.ndim else m.expand(labels.shape)
    target = cosine.gather(1, labels[:, None]).squeeze(1).clamp(-1 + 1e-7, 1 - 1e-7)
    sine = torch.sqrt(1.0 - target * target)
    with_margin = target * torch.cos(m) - sine * torch.sin(m)
    with_margin = torch.where(target > torch.cos(math.pi - m), with_margin, target - m * torch.sin(m))
    logits = cosine.scatter(1, labels[:, None], with_margin[:, None])
    return logits * scale


class MarginClassifier(nn.Module):
    """Class centres for (sub-center) ArcFace on the descriptor. Used in training only: it is saved beside the
    net in the checkpoint, never inside it, so describing, exporting and the kernel never see it."""

    def __init__(self, dim: int, classes: int, subcenters: int = 1, scale: float = 30.0,
                 margins: np.ndarray | float = 0.3):
        super().__init__()
        self.classes, self.subcenters, self.scale = classes, subcenters, scale
        self.centres = nn.Parameter(torch.empty(classes * subcenters, dim))
        nn.init.normal_(self.centres, std=1.0 / math.sqrt(dim))
        margins = np.broadcast_to(np.asarray(margins, dtype=np.float32), (classes,)).copy()
        self.register_buffer("margins", torch.from_numpy(margins))

    @classmethod
    def from_config(cls, dim: int, counts: np.ndarray, arc: dict) -> MarginClassifier:
        """From the ``train.arcface`` section and the train set's image count per class."""
        margins = dynamic_margins(counts, arc["dynamic_a"], arc["dynamic_b"]) if arc["dynamic"] else arc["margin"]
        return cls(dim, len(counts), arc["subcenters"], arc["scale"], margins)

    @torch.no_grad()
    def imprint(self, descriptors: torch.Tensor, labels: torch.Tensor) -> None:
        """Every centre (each sub-center alike) at its class's mean descriptor, L2-normalised: training starts
        from the classes the pretrained descriptor already separates, not from random directions."""
        sums = torch.zeros(self.classes, descriptors.shape[1], dtype=torch.float64, device=descriptors.device)
        sums.index_add_(0, labels, descriptors.double())
        means = F.normalize(sums.float(), dim=-1).to(self.centres.device).repeat_interleave(self.subcenters, dim=0)
        if self.subcenters > 1:  # a class's sub-centres apart from the start, or the max would always pick the first
            spread = torch.randn_like(means) * (0.1 / math.sqrt(means.shape[1]))
            spread[::self.subcenters] = 0
            means = F.normalize(means + spread, dim=-1)
        self.centres.copy_(means)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the margin logits."""
        cosine = subcenter_cosine(embeddings.float(), self.centres.float(), self.subcenters)
        return F.cross_entropy(arcface_logits(cosine, labels, self.margins, self.scale), labels)
