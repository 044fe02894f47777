"""Multi-scale and flip test-time augmentation around a descriptor network.

Each batch is decoded once at the configured size; other scales are resized
from it on the device (antialiased), so decoding cost does not grow with the
number of scales. Descriptors of all views are L2-normalised, combined by mean
or by GeM over views, and L2-normalised again.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..model.functional import l2n
from ..model.net import as_float_images


def parse_scales(values: list) -> list[float]:
    """Scales may be numbers or strings such as '1/sqrt2' and 'sqrt2'."""
    named = {"1/sqrt2": 1 / math.sqrt(2), "sqrt2": math.sqrt(2)}
    return [named[v] if isinstance(v, str) and v in named else float(v) for v in values]


def combine(views: torch.Tensor, how: str = "mean", p: float = 3.0) -> torch.Tensor:
    """V x N x D L2-normalised view descriptors -> N x D. ``gem`` uses signed powers over views."""
    if how == "mean":
        return l2n(views.mean(0))
    if how == "gem":
        # Signed power mean: descriptors may be negative after whitening.
        mean = (views.sign() * views.abs().pow(p)).mean(0)
        return l2n(mean.sign() * mean.abs().pow(1 / p))
    raise ValueError(f"unknown TTA combination '{how}'; use mean or gem")


class MultiScale(torch.nn.Module):
    """Wraps a net: the input batch at scale 1 -> one combined descriptor per image."""

    def __init__(self, net: torch.nn.Module, scales: list[float], flip: bool = False, how: str = "mean",
                 p: float = 3.0):
        super().__init__()
        self.net, self.scales, self.flip, self.how, self.p = net, scales, flip, how, p

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        views = []
        images = as_float_images(images)  # resizing needs floats
        height, width = images.shape[-2:]
        for scale in self.scales:
            x = images if scale == 1 else F.interpolate(
                images, size=(max(32, round(height * scale)), max(32, round(width * scale))), mode="bilinear",
                align_corners=False, antialias=scale < 1)
            views.append(l2n(self.net(x).float()))
            if self.flip:
                views.append(l2n(self.net(x.flip(-1)).float()))
        return combine(torch.stack(views), self.how, self.p)
