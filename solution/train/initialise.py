"""Before fine-tuning: REMAP's KL region weights, then PCA-whitening, fitted with the pretrained net."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..data.datasets import header_size
from ..infer.extract import extract_descriptors
from ..model.entropy import kl_to_weights, region_kl
from ..model.net import RetrievalNet
from ..model.whitening import fit_pca_whitening
from ..viz import kl_heatmap, kl_regions_on_image

log = logging.getLogger(__name__)


def sample_for_kl(labels: np.ndarray, n_images: int, rng: np.random.Generator, per_landmark: int = 4) -> np.ndarray:
    """Up to ``n_images`` indices, a few per landmark, so that matching pairs exist."""
    chosen: list[int] = []
    for label in rng.permutation(np.unique(labels)):
        members = np.flatnonzero(labels == label)
        if len(members) < 2:
            continue
        chosen.extend(rng.choice(members, min(per_landmark, len(members)), replace=False).tolist())
        if len(chosen) >= n_images:
            break
    return np.asarray(chosen[:n_images])


def kl_image_size(cfg: dict) -> int:
    """Where the KL weights are estimated: ``model.kl.image_size``, or (null) the size they are used at."""
    return cfg["model"]["kl"]["image_size"] or cfg["infer"]["image_size"]


def fit_region_weights(net: RetrievalNet, paths: list[Path], labels: np.ndarray, kl_cfg: dict, image_size: int,
                       device: torch.device, workers: int, rng: np.random.Generator,
                       plots: Path | None = None, warned: set[str] | None = None) -> np.ndarray:
    """Estimate per-(layer, region) KL with the current net at ``image_size``, set the weights; returns the
    L x R KL. The regions' cells depend on the map size, so the weights belong to the geometry they were
    estimated at."""
    head = net.head
    chosen = sample_for_kl(labels, kl_cfg["images"], rng)

    def region_rows(images: torch.Tensor) -> torch.Tensor:
        return torch.cat([head.region_vectors(x, i).flatten(1) for i, x in enumerate(net.features(images))], dim=1)

    # float32 on purpose, also on GPUs: the KL compares distance histograms that bf16 rounding would blur
    rows, _ = extract_descriptors(net, [paths[i] for i in chosen], image_size, 32, device, workers,
                                  desc="KL regions", forward=region_rows, warned=warned)
    per_layer, start = [], 0
    for channels in head.channels:
        width = head.num_regions * channels
        per_layer.append(rows[:, start:start + width].reshape(len(chosen), head.num_regions, channels))
        start += width
    kl = region_kl(per_layer, labels[chosen], kl_cfg["pairs"], rng, kl_cfg["bins"], kl_cfg["smoothing"])
    weights = kl_to_weights(kl, kl_cfg.get("uniform_mix", 0.0))
    head.set_region_weights(weights)
    net.meta.update(kl_fitted=True, kl=kl.tolist())
    log.info("KL region weights from %d images: KL range %.3f-%.3f, weight range %.2f-%.2f",
             len(chosen), kl.min(), kl.max(), weights.min(), weights.max())
    if plots is not None:
        kl_heatmap(weights, net.meta["layers"], plots / "kl_heatmap.png")
        kl_regions_on_image(_landscape(paths, chosen), head.regions, weights, net.meta["layers"],
                            plots / "kl_regions.png")
    return kl


def _landscape(paths: list[Path], chosen: np.ndarray) -> Path:
    """A landscape sample for the region picture: the grid's reference map is 4:3."""
    for i in chosen:
        size = header_size(paths[i])
        if size and size[0] > size[1]:
            return paths[i]
    return paths[chosen[0]]


def fit_whitening(net: RetrievalNet, paths: list[Path], model_cfg: dict, image_size: int, device: torch.device,
                  workers: int, rng: np.random.Generator, warned: set[str] | None = None,
                  max_images: int = 5000) -> None:
    chosen = rng.choice(len(paths), min(max_images, len(paths)), replace=False)
    pooled, ok = extract_descriptors(net, [paths[i] for i in chosen], image_size, 32, device, workers,
                                     desc="whitening", forward=net.pooled, warned=warned)
    weight, bias = fit_pca_whitening(pooled[ok], model_cfg["whiten_dim"], model_cfg["whiten_shrinkage"])
    net.set_whitening(weight.to(device), bias.to(device))
    log.info("PCA-whitening %d -> %d fitted on %d training descriptors", pooled.shape[1], weight.shape[0], ok.sum())


def initialise(net: RetrievalNet, paths: list[Path], labels: np.ndarray, cfg: dict, device: torch.device,
               workers: int, plots: Path | None = None, warned: set[str] | None = None) -> None:
    """Fit whatever the net still lacks: KL weights (REMAP), then whitening (on the weighted descriptors)."""
    rng = np.random.default_rng([cfg["run"]["seed"], 7])
    model_cfg = cfg["model"]
    if hasattr(net.head, "set_region_weights") and model_cfg["kl"]["enabled"] and not net.meta.get("kl_fitted"):
        fit_region_weights(net, paths, labels, model_cfg["kl"], kl_image_size(cfg), device, workers, rng, plots,
                           warned)
    if net.whiten is not None and not net.meta.get("whitening_fitted"):
        fit_whitening(net, paths, model_cfg, cfg["infer"]["image_size"], device, workers, rng, warned)
