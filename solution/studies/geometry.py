"""``python -m solution geometry``: the heads off the shelf at several map sizes, without training.

Region heads pool fixed relative boxes; on a small map the boxes round to the same few cells. This study
measures how much that costs: for each input size, one pass of the ImageNet backbone feeds every head (MAC,
R-MAC, REMAP with max and with GeM regions, GeM), each with its own KL weights (REMAP) and PCA-whitening
fitted at that size, scored on the validation queries (test is not read). It also counts, per size, the
final map of a 4:3 image and how many distinct boxes the 41-region grid leaves on it.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch

from ..competition import load_competition
from ..config import ConfigError
from ..data.gldv2 import image_path
from ..infer.extract import extract_descriptors
from ..infer.features import split_ids
from ..infer.pipeline import has_split, rank, solution_intervals
from ..metrics import format_interval, rounded
from ..model.functional import l2n
from ..model.heads import create_head
from ..model.net import build_net, place
from ..model.regions import boxes_to_cells
from ..model.whitening import fit_pca_whitening
from ..results import result_table
from ..runtime import data_workers, resolve_device, seed_everything
from ..train.initialise import fit_region_weights
from ..train.tuples import load_train_set

log = logging.getLogger(__name__)

# name -> (label, model keys over the config's): the head table's heads, at the layers they pool there
HEADS: dict[str, tuple[str, dict]] = {
    "mac": ("MAC (last layer)", {"head": "mac", "layers": [-1]}),
    "rmac": ("R-MAC (last layer)", {"head": "rmac", "layers": [-1]}),
    "remap": ("REMAP, max regions", {"head": "remap", "layers": [-2, -1], "region_pool": "max"}),
    "remap-gem": ("REMAP, GeM regions", {"head": "remap", "layers": [-2, -1], "region_pool": "gem"}),
    "gem": ("GeM (last layer)", {"head": "gem", "layers": [-1]}),
}
TAPS = [-2, -1]  # every head reads from these taps: one backbone pass serves them all


def map_geometry(net, size: int, regions: np.ndarray) -> dict:
    """The final map of a 4:3 image whose longest side is ``size``, and the grid's distinct boxes on it."""
    with torch.no_grad():
        final = net.features(torch.zeros(1, 3, size * 3 // 4, size))[-1]
    height, width = int(final.shape[-2]), int(final.shape[-1])
    cells = boxes_to_cells(regions, height, width)
    distinct = np.unique(cells, axis=0)
    sides = np.minimum(distinct[:, 2] - distinct[:, 0], distinct[:, 3] - distinct[:, 1])
    return {"final_map": f"{width}x{height}", "boxes": len(cells), "distinct_boxes": len(distinct),
            "smallest_side_cells": int(sides.min())}


def _head_for(name: str, model_cfg: dict, channels: list[int]) -> tuple[torch.nn.Module, list[int]]:
    """The head and which of the shared taps it reads (their positions in ``TAPS``)."""
    keys = HEADS[name][1]
    cfg = {**model_cfg, **keys}
    taps = [TAPS.index(layer) for layer in keys["layers"]]
    return create_head(keys["head"], [channels[i] for i in taps], cfg), taps


def geometry_study(cfg: dict, sizes: list[int], heads: list[str], whiten_images: int = 1000) -> dict:
    """Per size and head: validation mAP@100 off the shelf (ImageNet weights, KL at that size, whitening at
    that size), with its interval over queries."""
    unknown = [h for h in heads if h not in HEADS]
    if unknown:
        raise ConfigError(f"unknown head '{unknown[0]}'; choose from {', '.join(HEADS)}")
    comp = load_competition(cfg["competition"])
    if not has_split(comp, "val"):
        raise ConfigError(f"competition {comp.slug} has no validation queries; the geometry study chooses nothing "
                          "but reads no test either: run it on a competition with val.csv (the toy)")
    seed_everything(cfg["run"]["seed"])
    device, workers, root = resolve_device(cfg["run"]["device"]), data_workers(cfg["run"]["workers"]), \
        cfg["data"]["root"]
    model_cfg = copy.deepcopy(cfg["model"])
    model_cfg.update(head="remap", layers=TAPS)
    train_set = load_train_set(comp, root, cfg["data"]["train_list"])
    rng = np.random.default_rng([cfg["run"]["seed"], 13])
    whiten_pick = rng.choice(len(train_set.paths), min(whiten_images, len(train_set.paths)), replace=False)
    ids = {split: split_ids(comp, root, split) for split in ("index", "val")}
    split_paths = {split: [image_path(comp.data_dir(root), split, i) for i in names] for split, names in ids.items()}
    rows = []
    for size in sizes:
        net = place(build_net(model_cfg), device).eval()  # the ImageNet backbone, tapped at TAPS
        channels = net.head.channels
        built = {name: _head_for(name, model_cfg, channels) for name in heads}
        for head, _ in built.values():
            if hasattr(head, "set_region_weights") and model_cfg["kl"]["enabled"]:
                net.head = head.to(device)  # fit_region_weights reads net.head; its taps are TAPS here
                fit_region_weights(net, train_set.paths, train_set.labels, model_cfg["kl"], size, device, workers,
                                   np.random.default_rng([cfg["run"]["seed"], 7]))
        for head, _ in built.values():
            head.to(device).eval()
        dims = [head.dim for head, _ in built.values()]

        def pooled(images: torch.Tensor, net=net, built=built) -> torch.Tensor:
            maps = net.features(images)
            return torch.cat([head([maps[i] for i in taps]) for head, taps in built.values()], dim=1)

        described = {}
        for split, paths in (("whiten", [train_set.paths[i] for i in whiten_pick]), *split_paths.items()):
            described[split], _ = extract_descriptors(net, paths, size, cfg["infer"]["batch_size"], device, workers,
                                                      desc=f"{split} at {size} px", forward=pooled)
        geometry = map_geometry(net, size, net.head.regions)
        start = 0
        for name, dim in zip(built, dims):
            part = {split: rows_[:, start:start + dim] for split, rows_ in described.items()}
            start += dim
            if model_cfg["whiten_dim"]:
                weight, bias = fit_pca_whitening(part["whiten"], model_cfg["whiten_dim"], model_cfg["whiten_shrinkage"])
                part = {split: l2n(torch.from_numpy(v) @ weight.T + bias).numpy() for split, v in part.items()}
            scored = solution_intervals(comp, root, rank(part["val"], ids["val"], part["index"], ids["index"],
                                                         comp.metric["k"]), "val")["all"]
            rows.append({"size": size, "head": name, "label": HEADS[name][0], "map": scored["map"],
                         "ci": list(scored["ci"]), "queries": scored["queries"], **geometry})
            log.info("%d px, %s: validation mAP@100 %s (map %s, %d distinct boxes of %d)", size, name,
                     format_interval(scored["map"], scored["ci"]), geometry["final_map"], geometry["distinct_boxes"],
                     geometry["boxes"])
    return rounded({"rows": rows, "sizes": sizes, "heads": heads, "backbone": cfg["model"]["backbone"],
                    "whiten_dim": model_cfg["whiten_dim"], "uncap_final": model_cfg.get("uncap_final", False),
                    "whiten_images": len(whiten_pick)})


@result_table("geometry")
def table(out: dict) -> str:
    """Sizes as columns, heads as rows, then each size's map and box counts."""
    sizes = out["sizes"]
    cell = {(r["head"], r["size"]): r for r in out["rows"]}
    lines = ["| head | " + " | ".join(f"{s} px" for s in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for head in out["heads"]:
        row = [format_interval(cell[head, s]["map"], cell[head, s]["ci"]) for s in sizes]
        lines.append(f"| {cell[head, sizes[0]]['label']} | " + " | ".join(row) + " |")
    first = {s: cell[out["heads"][0], s] for s in sizes}
    lines.append("| final map of a 4:3 image | " + " | ".join(first[s]["final_map"] for s in sizes) + " |")
    lines.append("| distinct boxes of the 41 (smallest side, cells) | " + " | ".join(
        f"{first[s]['distinct_boxes']} ({first[s]['smallest_side_cells']})" for s in sizes) + " |")
    best = {s: max(out["heads"], key=lambda h: cell[h, s]["map"]) for s in sizes}
    lines.append("")
    lines.append(f"Validation mAP@100 off the shelf ({out['backbone']}, ImageNet weights; REMAP's KL weights and "
                 f"each head's {out['whiten_dim']}-D whitening fitted at the size of the column, the whitening on "
                 f"{out['whiten_images']} training images), {first[sizes[0]]['queries']} scored queries, 95% "
                 "bootstrap intervals over queries. Best per size: "
                 + ", ".join(f"{s} px {cell[best[s], s]['label']}" for s in sizes) + ".")
    return "\n".join(lines)
