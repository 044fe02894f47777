"""The quality table: TTA and post-processing steps added one at a time, on the same run's features.

Greedy forward selection on Public: each step is scored on top of the steps kept so far, and kept only
when it raises Public; a step that lowers it is reported and then left out of later rows, so one bad
step does not spoil the rows after it. Private is reported, never used to choose. Every score carries
its 95% bootstrap interval over queries, and every step its gain over the chain it was added to, paired
on the same queries: a gain whose interval contains 0 is not a result.
"""

from __future__ import annotations

import copy
import json

from ..atomic import atomic_path
from ..competition import load_competition
from ..config import ConfigError, run_dir
from ..metrics import format_interval, paired_bootstrap
from .pipeline import id_rankings, run_net, search_competition, solution_intervals

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
STEP_KEYS = {"multiscale": "+ multi-scale", "flip": "+ flip", "qe": "+ alpha-QE", "dba": "+ DBA",
             "diffusion": "+ diffusion", "superglobal": "+ SuperGlobal", "label_rerank": "+ label re-ranking"}


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


def scored_row(name: str, parts: dict[str, dict], previous: dict[str, dict] | None) -> dict:
    """One table row: mAP and interval per part, and the paired gain over ``previous`` (same queries)."""
    row = {"step": name, **{k: round(v["map"], 4) for k, v in parts.items()},
           "ci95": {k: [round(x, 4) for x in v["ci"]] for k, v in parts.items()}}
    if previous is not None:
        row["gain"] = {k: {m: round(x, 4) if isinstance(x, float) else x
                           for m, x in paired_bootstrap(v["aps"], previous[k]["aps"]).items()}
                       for k, v in parts.items()}
    return row


def ablate(cfg: dict, skip: tuple[str, ...] = ()) -> dict:
    """``skip``: step keys (STEP_KEYS) left out, e.g. ``flip``, which doubles every extraction on a CPU."""
    unknown = [k for k in skip if k not in STEP_KEYS]
    if unknown:
        raise ConfigError(f"unknown ablation step '{unknown[0]}'; choose from {', '.join(STEP_KEYS)}")
    comp = load_competition(cfg["competition"])
    run = run_dir(cfg)
    net, device = run_net(cfg)
    kept, rows, previous = _plain(cfg["infer"]), [], None
    for name, change in [step for step in STEPS if step[0] not in {STEP_KEYS[k] for k in skip}]:
        infer_cfg = _apply(kept, change)
        neighbours, _, test_ids, index_ids = search_competition(net, comp, cfg, infer_cfg, device)
        parts = solution_intervals(comp, cfg["data"]["root"], id_rankings(test_ids, index_ids, neighbours))
        row = scored_row(name, parts, previous)
        row["kept"] = previous is None or parts["Public"]["map"] > previous["Public"]["map"]
        row["infer"] = {k: v for k, v in infer_cfg.items() if k not in ("batch_size", "dtype", "shard_size")}
        rows.append(row)
        if row["kept"]:
            kept, previous = infer_cfg, parts
    best = max((i for i, r in enumerate(rows) if r["kept"]), key=lambda i: (rows[i]["Public"], -i))
    result = {"rows": rows, "best_on_public": rows[best]["step"]}
    path = run / "ablation.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    return {**result, "path": path}


def gain_cell(row: dict, part: str) -> str:
    gain = row.get("gain", {}).get(part)
    if not gain:
        return ""
    mark = "" if gain["excludes_zero"] else " (tie)"
    return format_interval(gain["diff"], (gain["low"], gain["high"]), signed=True) + mark


def table(result: dict) -> str:
    lines = ["| step | Public [95% CI] | gain on Public over the kept chain, paired | Private [95% CI] | "
             "all [95% CI] |", "|---|---|---|---|---|"]
    for row in result["rows"]:
        mark = " (best on Public)" if row["step"] == result["best_on_public"] else ""
        mark += "" if row.get("kept", True) else " (lowers Public: not kept)"
        cells = [format_interval(row[k], row["ci95"][k]) for k in ("Public", "Private", "all")]
        lines.append(f"| {row['step']}{mark} | {cells[0]} | {gain_cell(row, 'Public')} | {cells[1]} | {cells[2]} |")
    return "\n".join(lines)
