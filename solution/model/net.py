"""The retrieval network and its self-describing checkpoints.

``RetrievalNet`` takes RGB images in [0, 1] (it applies the backbone's own
normalisation), runs the backbone's tapped layers through a head and returns
N x D L2-normalised descriptors. ``net.meta`` holds everything needed to build
the same network again, so a checkpoint file alone is enough for ``extract``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..atomic import atomic_path
from ..config import ConfigError
from .backbone import WeightError, create_backbone, load_torch_file, normalisation
from .functional import l2n
from .heads import create_head


class RetrievalNet(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module, meta: dict, whiten: nn.Linear | None = None):
        super().__init__()
        self.tap_relu = bool(meta["model_cfg"].get("tap_relu", False))
        self.backbone = backbone
        self.head = head
        self.whiten = whiten
        self.meta = meta
        self.register_buffer("mean", torch.tensor(meta["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(meta["std"]).view(1, 3, 1, 1), persistent=False)

    @property
    def dim(self) -> int:
        return self.meta["dim"]

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``images``: N x 3 x H x W, uint8 (as the data loaders send them) or float in [0, 1]."""
        images = as_float_images(images)
        # NHWC, as the net's weights: tensor cores convolve fastest in it, and on 2 CPU cores lite0 ran
        # 1.4x faster forward and 1.5x forward+backward than in NCHW (same outputs to 2e-7).
        images = images.contiguous(memory_format=torch.channels_last)
        maps = self.backbone((images - self.mean) / self.std)
        # Signed block outputs (EfficientNet's stages end without activation) would lose their negative half
        # to GeM's clamp and would fight max pooling; every head pools the same non-negative maps.
        return [torch.relu(m) for m in maps] if self.tap_relu else maps

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """The head's descriptor before whitening (what PCA-whitening is fitted on)."""
        return self.head(self.features(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        descriptor = self.pooled(images)
        return descriptor if self.whiten is None else l2n(self.whiten(descriptor))

    @torch.no_grad()
    def set_whitening(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        if self.whiten is None or self.whiten.weight.shape != weight.shape:
            raise ValueError(f"whitening of shape {tuple(weight.shape)} does not fit this net")
        self.whiten.weight.copy_(weight)
        self.whiten.bias.copy_(bias)
        self.meta["whitening_fitted"] = True


def build_net(model_cfg: dict, pretrained: str | None = None) -> RetrievalNet:
    """Build from the ``model`` config section; ``pretrained`` overrides its weight source."""
    source = model_cfg["pretrained"] if pretrained is None else pretrained
    # .get: checkpoints written before these keys rebuild as they were trained
    backbone, layers = create_backbone(model_cfg["backbone"], model_cfg["layers"], source,
                                       model_cfg.get("pretrained_file"), model_cfg.get("final_map", False),
                                       model_cfg.get("uncap_final", False))
    channels = [backbone.feature_info.channels()[i] for i in range(len(layers))]
    head = create_head(model_cfg["head"], channels, model_cfg)
    mean, std = normalisation(model_cfg["backbone"], model_cfg["pretrained"])
    whiten = None
    dim = head.dim
    if model_cfg["whiten_dim"]:
        if model_cfg["whiten_dim"] > head.dim:
            raise ConfigError(f"model.whiten_dim={model_cfg['whiten_dim']} exceeds the head's {head.dim} dimensions")
        dim = model_cfg["whiten_dim"]
        whiten = nn.Linear(head.dim, dim, bias=True)
        with torch.no_grad():  # until fitted: the first ``dim`` coordinates, unchanged
            whiten.weight.copy_(torch.eye(dim, head.dim))
            whiten.bias.zero_()
    meta = {
        "backbone": model_cfg["backbone"], "layers": list(layers), "head": model_cfg["head"],
        "model_cfg": dict(model_cfg), "mean": list(mean), "std": list(std), "dim": dim,
        "pooled_dim": head.dim, "whitening_fitted": False, "kl_fitted": False,
    }
    if hasattr(head, "regions"):
        meta["regions"] = head.regions.tolist()
    return RetrievalNet(backbone, head, meta, whiten).to(memory_format=torch.channels_last)


def as_float_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float in [0, 1] on their own device; float input passes unchanged."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


def place(net: RetrievalNet, device: torch.device) -> RetrievalNet:
    """``net`` on ``device``, channels-last as built (the layout ``features`` gives its inputs)."""
    return net.to(device).to(memory_format=torch.channels_last)


def save_checkpoint(path: str | Path, net: RetrievalNet, **extra) -> Path:
    """Atomic write of the net (meta + weights) and any training state in ``extra``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"meta": net.meta, "state_dict": net.state_dict(), **extra}, tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[RetrievalNet, dict]:
    """Rebuild the exact network from the checkpoint alone (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; run `make train` first")
    payload = load_torch_file(path, "checkpoint", map_location)
    if not isinstance(payload, dict) or "meta" not in payload or "state_dict" not in payload:
        raise WeightError(f"{path} is not a checkpoint written by this project (no meta/state_dict); a bare "
                          "backbone state dict goes in model.pretrained=file model.pretrained_file=<path>")
    meta = payload["meta"]
    model_cfg = {**meta["model_cfg"], "layers": meta["layers"]}
    net = build_net(model_cfg, pretrained="none")
    if "regions" in meta:  # the stored grid, not today's rule, so old checkpoints rebuild exactly
        net.head.regions = np.asarray(meta["regions"], dtype=np.float64)
    net.meta = meta
    net.load_state_dict(payload["state_dict"])
    net.meta["fingerprint"] = file_fingerprint(path)
    return net, payload


def file_fingerprint(path: str | Path) -> str:
    """Size and modification time of a checkpoint file: identifies this exact file, so features and rankings
    of an older checkpoint are not taken for this one's."""
    stat = Path(path).stat()
    return f"{stat.st_size}-{stat.st_mtime_ns}"
