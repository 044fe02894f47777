"""``evaluate-revisitop``: mAP on Revisited Oxford/Paris (Easy/Medium/Hard), with and without alpha-QE + DBA."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from ..data.revisitop import load_gnd, query_image
from ..metrics import revisitop_map
from ..model.net import RetrievalNet
from .features import describe_images
from .retrieve import retrieve


def evaluate_revisitop(net: RetrievalNet, folder: Path, infer_cfg: dict, device: torch.device,
                       workers: int) -> dict[str, dict[str, float]]:
    """{'plain': {easy, medium, hard}, 'qe+dba': {...}} in percent, as papers report them."""
    name = folder.name
    gnd = load_gnd(folder / f"gnd_{name}.pkl")
    crops = folder / "queries"
    crops.mkdir(exist_ok=True)
    query_paths = []
    for i, query in enumerate(gnd["qimlist"]):
        path = crops / f"{query}.jpg"
        if not path.is_file():
            query_image(folder, gnd, i).save(path, quality=95)
        query_paths.append(path)
    database = describe_images(net, [folder / "jpg" / f"{n}.jpg" for n in gnd["imlist"]], infer_cfg, device,
                               workers, f"{name} database")[0]
    queries = describe_images(net, query_paths, infer_cfg, device, workers, f"{name} queries")[0]
    results = {}
    for label, switches in (("plain", False), ("qe+dba", True)):
        cfg = copy.deepcopy(infer_cfg)
        cfg.update(topk=len(database))
        for step in ("qe", "dba"):
            cfg[step]["enabled"] = switches
        for step in ("diffusion", "superglobal", "label_rerank"):
            cfg[step]["enabled"] = False
        neighbours, _ = retrieve(queries, database, cfg)
        scores = revisitop_map([row[row >= 0].tolist() for row in neighbours], gnd["gnd"])
        results[label] = {k: round(100 * v, 2) for k, v in scores.items()}
    return results
