"""The quality table: cumulative TTA and post-processing steps, each scored on the same run's features.

The best row is chosen on the Public part alone; Private is reported, never used to choose.
"""

from __future__ import annotations

import copy
import json
import os

from ..competition import load_competition
from ..config import run_dir
from ..data.gldv2 import read_train_clean
from ..model.net import load_checkpoint
from ..runtime import resolve_device
from .features import features
from .pipeline import solution_scores
from .retrieve import retrieve

STEPS = [
    ("single scale", {}),
    ("+ multi-scale", {"scales": ["1/sqrt2", 1, "sqrt2"]}),
    ("+ flip", {"flip": True}),
    ("+ alpha-QE", {"qe": {"enabled": True}}),
    ("+ DBA", {"dba": {"enabled": True}}),
    ("+ diffusion", {"diffusion": {"enabled": True}}),
    ("+ SuperGlobal", {"superglobal": {"enabled": True}}),
    ("+ label re-ranking", {"label_rerank": {"enabled": True}}),
]


def _apply(infer_cfg: dict, change: dict) -> dict:
    out = copy.deepcopy(infer_cfg)
    for key, value in change.items():
        if isinstance(value, dict):
            out[key].update(value)
        else:
            out[key] = value
    return out


def _plain(infer_cfg: dict) -> dict:
    out = copy.deepcopy(infer_cfg)
    out.update(scales=[1], flip=False)
    for step in ("qe", "dba", "diffusion", "superglobal", "label_rerank"):
        out[step]["enabled"] = False
    return out


def ablate(cfg: dict) -> dict:
    comp = load_competition(cfg["competition"])
    data_root = cfg["data"]["root"]
    run = run_dir(cfg)
    device = resolve_device(cfg["run"]["device"])
    net, _ = load_checkpoint(run / "checkpoint.pt")
    net.to(device).eval()
    workers = cfg["run"]["workers"]
    labels = read_train_clean(comp.csv_path(data_root, "train_clean_csv")).set_index("id")["landmark_id"]
    infer_cfg, rows = _plain(cfg["infer"]), []
    for name, change in STEPS:
        infer_cfg = _apply(infer_cfg, change)
        index, index_ids = features(net, comp, data_root, "index", run / "features", infer_cfg, device, workers)
        test, test_ids = features(net, comp, data_root, "test", run / "features", infer_cfg, device, workers)
        train = train_labels = None
        if infer_cfg["label_rerank"]["enabled"]:
            train, train_ids = features(net, comp, data_root, "train", run / "features", infer_cfg, device, workers)
            train_labels = labels.loc[train_ids].to_numpy()
        neighbours, _ = retrieve(test, index, infer_cfg, train, train_labels)
        rankings = {q: [index_ids[j] for j in row if j >= 0] for q, row in zip(test_ids, neighbours)}
        scores = solution_scores(comp, data_root, rankings)
        rows.append({"step": name, **{k: round(v, 4) for k, v in scores.items()},
                     "infer": {k: v for k, v in infer_cfg.items() if k not in ("batch_size", "dtype", "shard_size")}})
    best = max(range(len(rows)), key=lambda i: (rows[i]["Public"], -i))
    result = {"rows": rows, "best_on_public": rows[best]["step"]}
    path = run / "ablation.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, path)
    return {**result, "path": path}


def table(result: dict) -> str:
    lines = ["| step | Public | Private | all |", "|---|---|---|---|"]
    for row in result["rows"]:
        mark = " (best on Public)" if row["step"] == result["best_on_public"] else ""
        lines.append(f"| {row['step']}{mark} | {row['Public']:.4f} | {row['Private']:.4f} | {row['all']:.4f} |")
    return "\n".join(lines)
