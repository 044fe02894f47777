"""Pooling heads behind a registry: ``model.head=<name>`` builds one, no if-chain.

A head takes the list of tapped feature maps and returns N x D descriptors,
L2-normalised. Multi-layer heads pool each layer, L2-normalise it and
concatenate; that is the per-layer aggregation REMAP uses too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from . import functional as LF

HEADS: dict[str, Callable[..., nn.Module]] = {}


def register_head(name: str):
    def wrap(cls):
        HEADS[name] = cls
        return cls
    return wrap


def create_head(name: str, channels: list[int], **kwargs) -> nn.Module:
    if name not in HEADS:
        raise KeyError(f"unknown head '{name}'; registered: {', '.join(sorted(HEADS))}")
    return HEADS[name](channels, **kwargs)


class _PerLayerHead(nn.Module):
    """Pool each map with ``self.pool``, L2 per layer, concatenate, L2."""

    def __init__(self, channels: list[int]):
        super().__init__()
        self.channels = list(channels)

    @property
    def dim(self) -> int:
        return sum(self.channels)

    def pool(self, x: torch.Tensor, layer: int) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        return LF.l2n(torch.cat([LF.l2n(self.pool(x, i)) for i, x in enumerate(maps)], dim=-1))


@register_head("mac")
class MAC(_PerLayerHead):
    def pool(self, x, layer):
        return LF.mac(x)


@register_head("spoc")
class SPoC(_PerLayerHead):
    def pool(self, x, layer):
        return LF.spoc(x)


@register_head("gem")
class GeM(_PerLayerHead):
    """GeM with one learnable p per layer (no weight decay on it: see ``no_decay_parameters``)."""

    def __init__(self, channels: list[int], p: float = 3.0):
        super().__init__(channels)
        self.p = nn.Parameter(torch.full((len(channels),), float(p)))

    def pool(self, x, layer):
        return LF.gem(x, self.p[layer])

    def no_decay_parameters(self) -> list[nn.Parameter]:
        return [self.p]
