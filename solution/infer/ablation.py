"""The quality table: cumulative TTA and post-processing steps, each scored on the same run's features.

The best row is chosen on the Public part alone; Private is reported, never used to choose.
"""

from __future__ import annotations

import copy
import json

from ..atomic import atomic_path
from ..competition import load_competition
from ..config import run_dir
from .pipeline import id_rankings, run_net, search_competition, solution_scores

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
    run = run_dir(cfg)
    net, device = run_net(cfg)
    infer_cfg, rows = _plain(cfg["infer"]), []
    for name, change in STEPS:
        infer_cfg = _apply(infer_cfg, change)
        neighbours, _, test_ids, index_ids = search_competition(net, comp, cfg, infer_cfg, device)
        scores = solution_scores(comp, cfg["data"]["root"], id_rankings(test_ids, index_ids, neighbours))
        rows.append({"step": name, **{k: round(v, 4) for k, v in scores.items()},
                     "infer": {k: v for k, v in infer_cfg.items() if k not in ("batch_size", "dtype", "shard_size")}})
    best = max(range(len(rows)), key=lambda i: (rows[i]["Public"], -i))
    result = {"rows": rows, "best_on_public": rows[best]["step"]}
    path = run / "ablation.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    return {**result, "path": path}


def table(result: dict) -> str:
    lines = ["| step | Public | Private | all |", "|---|---|---|---|"]
    for row in result["rows"]:
        mark = " (best on Public)" if row["step"] == result["best_on_public"] else ""
        lines.append(f"| {row['step']}{mark} | {row['Public']:.4f} | {row['Private']:.4f} | {row['all']:.4f} |")
    return "\n".join(lines)
