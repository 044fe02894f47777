"""``python -m solution saturation``: how often a region's maximum sits at the activation's cap.

lite0's final map ends in ReLU6. Where a region's maximum is exactly 6, max pooling passes that region no
gradient for that channel (ReLU6's slope is 0 there), so fine-tuning cannot move it: it hurts every
max-pooling head (MAC, R-MAC, REMAP) and barely touches GeM, whose mean spreads the gradient over all cells.
Per tapped layer and input size, this counts the share of region maxima (41 regions x channels per image)
and the share of map cells at the cap, off the shelf and for any checkpoint given; a layer without a capped
activation says so. ``model.uncap_final=true`` is the remedy it measures the need for.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import torch

from ..competition import load_competition
from ..data.gldv2 import image_path
from ..infer.extract import extract_descriptors
from ..infer.features import split_ids
from ..model.functional import region_max_pool
from ..model.net import build_net, load_checkpoint, place
from ..model.regions import boxes_to_cells, region_grid
from ..results import result_table
from ..runtime import data_workers, resolve_device

log = logging.getLogger(__name__)
TAPS = [-2, -1]  # REMAP's taps


def layer_caps(net) -> list[float | None]:
    """Each tapped map's cap: the final map's capped activation, where the net has one and taps it."""
    caps: list[float | None] = [None] * len(net.meta["layers"])
    if getattr(net.backbone, "takes_final", False):
        caps[-1] = net.backbone.final_cap
    return caps


def _shares(net, caps: list[float | None], regions: np.ndarray):
    def forward(images: torch.Tensor) -> torch.Tensor:
        columns = []
        for x, cap in zip(net.features(images), caps):
            if cap is None:
                columns += [torch.full((len(x),), float("nan"))] * 2
                continue
            maxima = region_max_pool(x, boxes_to_cells(regions, int(x.shape[-2]), int(x.shape[-1])))
            at_cap = cap - 1e-4
            columns += [(maxima >= at_cap).float().mean(dim=(1, 2)), (x >= at_cap).float().mean(dim=(1, 2, 3))]
        return torch.stack(columns, dim=1)
    return forward


def saturation_study(cfg: dict, sizes: list[int], images: int, checkpoints: list[str]) -> dict:
    """Per net (off the shelf, then each checkpoint), size and tapped layer: shares at the cap."""
    comp, root = load_competition(cfg["competition"]), cfg["data"]["root"]
    device, workers = resolve_device(cfg["run"]["device"]), data_workers(cfg["run"]["workers"])
    paths = [image_path(comp.data_dir(root), "index", i) for i in split_ids(comp, root, "index")]
    pick = np.random.default_rng([cfg["run"]["seed"], 17]).choice(len(paths), min(images, len(paths)),
                                                                 replace=False)
    paths = [paths[i] for i in sorted(pick)]
    spec = cfg["model"]["regions"]
    regions = region_grid(spec["levels"], spec["overlap"], tuple(spec["reference"]), spec["whole"])
    model_cfg = {**copy.deepcopy(cfg["model"]), "head": "mac", "layers": TAPS}
    nets = [("off the shelf", build_net(model_cfg))]
    nets += [(str(path), load_checkpoint(path)[0]) for path in checkpoints]
    rows = []
    for name, net in nets:
        net = place(net, device).eval()
        caps = layer_caps(net)
        stages = net.meta["layers"]
        for size in sizes:
            shares, _ = extract_descriptors(net, paths, size, cfg["infer"]["batch_size"], device, workers,
                                            desc=f"saturation at {size} px", forward=_shares(net, caps, regions))
            for i, (stage, cap) in enumerate(zip(stages, caps)):
                row = {"net": name, "size": size, "stage": int(stage), "cap": cap, "images": len(paths),
                       "uncapped": bool(net.meta["model_cfg"].get("uncap_final", False))}
                if cap is not None:
                    row.update(region_maxima=float(np.mean(shares[:, 2 * i])),
                               cells=float(np.mean(shares[:, 2 * i + 1])))
                rows.append(row)
                log.info("%s, %d px, stage %d: %s", name, size, stage, _words(row))
    return {"rows": rows, "sizes": sizes, "backbone": cfg["model"]["backbone"], "images": len(paths),
            "regions": len(regions)}


def _words(row: dict) -> str:
    if row["cap"] is None:
        return "no capped activation" + (" (uncap_final)" if row["uncapped"] and row["stage"] else "")
    return (f"{100 * row['region_maxima']:.1f}% of region maxima and {100 * row['cells']:.1f}% of cells at the "
            f"cap {row['cap']:g}")


@result_table("saturation")
def table(out: dict) -> str:
    lines = ["| net | input (longest side) | tapped stage | region maxima at the cap | map cells at the cap |",
             "|---|---|---|---|---|"]
    for row in out["rows"]:
        net = row["net"] if row["net"] == "off the shelf" else f"`{Path(row['net']).parent.name}`"
        if row["cap"] is None:
            cells = ["no cap", "no cap"]
        else:
            cells = [f"{100 * row['region_maxima']:.1f}%", f"{100 * row['cells']:.1f}%"]
        lines.append(f"| {net} | {row['size']} px | {row['stage']} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"{out['backbone']}, {out['images']} index images, {out['regions']} regions per image; a region "
                 "maximum is counted per region and channel, a value is at the cap within 1e-4 of it. A stage "
                 "whose map ends without a capped activation (an inner stage, through ReLU) says no cap.")
    return "\n".join(lines)
