"""Pooling heads behind a registry: ``model.head=<name>`` builds one, no if-chain.

A head takes the list of tapped feature maps and returns N x D descriptors,
L2-normalised. Multi-layer heads pool each layer, L2-normalise it and
concatenate; that is the per-layer aggregation REMAP uses too.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import functional as LF
from .regions import boxes_to_cells, region_grid

HEADS: dict[str, Callable[..., nn.Module]] = {}


def register_head(name: str):
    def wrap(cls):
        HEADS[name] = cls
        return cls
    return wrap


def create_head(name: str, channels: list[int], model_cfg: dict | None = None, **kwargs) -> nn.Module:
    """Build head ``name``; with ``model_cfg`` the head reads its own keys (``from_config``)."""
    if name not in HEADS:
        raise KeyError(f"unknown head '{name}'; registered: {', '.join(sorted(HEADS))}")
    if model_cfg is not None:
        return HEADS[name].from_config(channels, model_cfg)
    return HEADS[name](channels, **kwargs)


class _PerLayerHead(nn.Module):
    """Pool each map with ``self.pool``, L2 per layer, concatenate, L2."""

    def __init__(self, channels: list[int]):
        super().__init__()
        self.channels = list(channels)

    @classmethod
    def from_config(cls, channels: list[int], model_cfg: dict) -> nn.Module:
        return cls(channels)

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

    @classmethod
    def from_config(cls, channels: list[int], model_cfg: dict) -> nn.Module:
        return cls(channels, p=model_cfg["gem_p"])

    def pool(self, x, layer):
        return LF.gem(x, self.p[layer])

    def no_decay_parameters(self) -> list[nn.Parameter]:
        return [self.p]


REGION_POOLS = ("max", "gem")


class _RegionHead(_PerLayerHead):
    """Shared by R-MAC and REMAP: L2-normalised pooled vectors of fixed relative regions.

    ``region_pool`` says how a region is pooled: ``max`` (the papers': R-MAC's and REMAP's) or ``gem``, a
    generalised mean with one learnable p per layer (no weight decay), started at ``region_p``. Max is GeM's
    p -> inf limit; GeM lets every cell of a region learn, where max trains one cell per region and channel.
    """

    def __init__(self, channels: list[int], regions: np.ndarray | list | None = None, region_pool: str = "max",
                 region_p: float = 3.0):
        super().__init__(channels)
        if region_pool not in REGION_POOLS:
            raise ValueError(f"region pooling '{region_pool}' is not one of {REGION_POOLS}")
        self.regions = np.asarray(region_grid() if regions is None else regions, dtype=np.float64)
        self.region_pool = region_pool
        if region_pool == "gem":
            self.region_p = nn.Parameter(torch.full((len(channels),), float(region_p)))

    @staticmethod
    def _keys(model_cfg: dict) -> dict:
        spec = model_cfg["regions"]
        # .get: checkpoints saved before region pooling was a key were max-pooled
        return {"regions": region_grid(spec["levels"], spec["overlap"], tuple(spec["reference"]), spec["whole"]),
                "region_pool": model_cfg.get("region_pool", "max"), "region_p": model_cfg.get("region_p", 3.0)}

    @classmethod
    def from_config(cls, channels: list[int], model_cfg: dict) -> nn.Module:
        return cls(channels, **cls._keys(model_cfg))

    @property
    def num_regions(self) -> int:
        return len(self.regions)

    def region_vectors(self, x: torch.Tensor, layer: int = 0) -> torch.Tensor:
        """N x R x C, each region's pooled vector L2-normalised."""
        height, width = int(x.shape[-2]), int(x.shape[-1])  # plain ints, also while tracing
        cells = boxes_to_cells(self.regions, height, width)
        if self.region_pool == "gem":
            return LF.l2n(LF.region_gem_pool(x, cells, self.region_p[layer]))
        return LF.l2n(LF.region_max_pool(x, cells))

    def no_decay_parameters(self) -> list[nn.Parameter]:
        return [self.region_p] if self.region_pool == "gem" else []


@register_head("rmac")
class RMAC(_RegionHead):
    """R-MAC: the plain sum of the L2-normalised region vectors."""

    def pool(self, x, layer):
        return self.region_vectors(x, layer).sum(dim=1)


LAYER_MODES = ("sum", "learned", "l2")


@register_head("remap")
class REMAP(_RegionHead):
    """REMAP: a non-negative, trainable weight per (layer, region), initialised from KL divergence.

    The weights are plain parameters, as the paper's 1x1 convolution over the region axis, kept
    non-negative by projection: :meth:`project_` clamps them at 0 after every optimiser step, and the
    forward clamps too (value only: the gradient passes unchanged). A weight at 0 still gets its full
    gradient (a softplus would scale it by 1 - e^-w, so a region the KL start puts near 0 could never come
    back), and ``train.region_lr`` gives them a learning rate of their own. Before KL initialisation every
    weight is 1 (R-MAC).

    ``layers`` says how the layers' weighted region sums meet:
    - ``sum``: concatenated as they are, then L2; a layer's weights set its share of the descriptor.
    - ``learned``: each L2-normalised, then scaled by a learnable non-negative layer weight.
    - ``l2``: each L2-normalised; any per-layer scale of the weights cancels (checkpoints before the choice).
    """

    def __init__(self, channels: list[int], regions: np.ndarray | list | None = None, layers: str = "l2",
                 region_pool: str = "max", region_p: float = 3.0):
        super().__init__(channels, regions, region_pool, region_p)
        if layers not in LAYER_MODES:
            raise ValueError(f"REMAP layer mode '{layers}' is not one of {LAYER_MODES}")
        self.layer_mode = layers
        self.weight = nn.Parameter(torch.ones(len(channels), self.num_regions))
        if layers == "learned":
            self.layer_weight = nn.Parameter(torch.ones(len(channels)))

    @classmethod
    def from_config(cls, channels: list[int], model_cfg: dict) -> nn.Module:
        # "l2" is the mode of checkpoints saved before the key existed (their meta lacks it); a config always
        # has the key, defaults.yaml's "sum" included
        return cls(channels, layers=model_cfg.get("remap_layers", "l2"), **cls._keys(model_cfg))

    @property
    def region_weights(self) -> torch.Tensor:
        return _non_negative(self.weight)

    @property
    def layer_weights(self) -> torch.Tensor:
        """What each layer's share is multiplied by (ones unless the mode learns them)."""
        if self.layer_mode == "learned":
            return _non_negative(self.layer_weight)
        return torch.ones(len(self.channels), device=self.weight.device)

    @torch.no_grad()
    def set_region_weights(self, weights: torch.Tensor | np.ndarray) -> None:
        """Set the L x R weights; in ``learned`` mode each layer's mean becomes its layer weight."""
        weights = torch.as_tensor(np.asarray(weights), dtype=self.weight.dtype)
        if weights.shape != self.weight.shape:
            raise ValueError(f"region weights must be {tuple(self.weight.shape)}, got {tuple(weights.shape)}")
        self.weight.copy_(weights.clamp(min=0))
        if self.layer_mode == "learned":
            self.layer_weight.copy_(weights.clamp(min=0).mean(dim=1))

    @torch.no_grad()
    def project_(self) -> None:
        """Clamp the weights at 0 (after an optimiser step)."""
        for p in self.region_parameters():
            p.clamp_(min=0)

    def pool(self, x, layer):
        return torch.einsum("nrc,r->nc", self.region_vectors(x, layer), self.region_weights[layer])

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        pooled = [self.pool(x, i) for i, x in enumerate(maps)]
        if self.layer_mode == "sum":
            return LF.l2n(torch.cat(pooled, dim=-1))
        scale = self.layer_weights
        return LF.l2n(torch.cat([LF.l2n(p) * scale[i] for i, p in enumerate(pooled)], dim=-1))

    def region_parameters(self) -> list[nn.Parameter]:
        """The weights trained at ``train.region_lr`` without weight decay."""
        return [self.weight] + ([self.layer_weight] if self.layer_mode == "learned" else [])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints before the projected weights stored softplus parameters (raw_weights, raw_layer_weights)
        for old, new in (("raw_weights", "weight"), ("raw_layer_weights", "layer_weight")):
            if prefix + old in state_dict:
                state_dict[prefix + new] = F.softplus(state_dict.pop(prefix + old))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _non_negative(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` clamped at 0 in value, with the identity's gradient: torch's clamp passes no gradient at the
    boundary itself, so a weight the projection put at exactly 0 would never move again."""
    return weight + (weight.clamp(min=0) - weight).detach()
