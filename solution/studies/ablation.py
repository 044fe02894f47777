"""The quality table: TTA and post-processing steps added one at a time, on the same run's features.

Greedy forward selection on the validation queries (the toy's ``val`` split, drawn like test's; a
competition without one falls back to Public, and says so): each step is scored on top of the steps kept
so far, and kept only when it raises validation mAP@100; a step that lowers it is reported and then left
out of later rows, so one bad step does not spoil the rows after it. Test (Public, Private, all) is
scored once per row, to report, and never read to choose: the choices are the same without its solution
file. Every score carries its 95% bootstrap interval over queries, and every step its gain over the chain
it was added to, paired on the same queries: a gain whose interval contains 0 is not a result.
"""

from __future__ import annotations

import copy

from ..competition import load_competition
from ..config import ConfigError, run_dir
from ..infer.pipeline import has_split, id_rankings, run_net, search_competition, solution_intervals
from ..metrics import format_gain, format_interval, paired_bootstrap, rounded
from ..results import result_table, write_result

STEPS = [
    ("single scale", {}),
    ("+ multi-scale", {"scales": ["1/sqrt2", 1, "sqrt2"]}),
    ("+ flip", {"flip": True}),
    ("+ alpha-QE", {"qe": {"enabled": True}}),
    ("+ DBA", {"dba": {"enabled": True}}),
    ("+ diffusion", {"diffusion": {"enabled": True}}),
    # SuperGlobal averages the database with its own neighbours, as DBA does: never both (config rule)
    ("+ SuperGlobal (instead of DBA)", {"superglobal": {"enabled": True}, "dba": {"enabled": False}}),
    ("+ label re-ranking", {"label_rerank": {"enabled": True}}),
]
STEP_KEYS = {"multiscale": "+ multi-scale", "flip": "+ flip", "qe": "+ alpha-QE", "dba": "+ DBA",
             "diffusion": "+ diffusion", "superglobal": "+ SuperGlobal (instead of DBA)",
             "label_rerank": "+ label re-ranking"}


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
        row["gain"] = {k: rounded(paired_bootstrap(v["aps"], previous[k]["aps"])) for k, v in parts.items()}
    return row


def selection(comp) -> tuple[str, str, str]:
    """(query split, part, words) the choices are made on: validation's "all" where the competition has a
    validation split, else test's Public (what Kaggle's leaderboard shows, and then reported on)."""
    if has_split(comp, "val"):
        return "val", "all", "validation (val.csv, drawn like test's queries; test is only reported)"
    return "test", "Public", "Public (this competition has no validation split; Public is then reported too)"


def ablate(cfg: dict, skip: tuple[str, ...] = ()) -> dict:
    """``skip``: step keys (STEP_KEYS) left out, e.g. ``flip``, which doubles every extraction on a CPU."""
    unknown = [k for k in skip if k not in STEP_KEYS]
    if unknown:
        raise ConfigError(f"unknown ablation step '{unknown[0]}'; choose from {', '.join(STEP_KEYS)}")
    comp = load_competition(cfg["competition"])
    run = run_dir(cfg)
    net, device = run_net(cfg)
    split, part, words = selection(comp)

    def scored(infer_cfg: dict, queries: str) -> dict[str, dict]:
        neighbours, _, query_ids, index_ids = search_competition(net, comp, cfg, infer_cfg, device, queries)
        return solution_intervals(comp, cfg["data"]["root"], id_rankings(query_ids, index_ids, neighbours), queries)

    kept, rows, chosen_before, reported_before = _plain(cfg["infer"]), [], None, None
    for name, change in [step for step in STEPS if step[0] not in {STEP_KEYS[k] for k in skip}]:
        infer_cfg = _apply(kept, change)
        chosen = scored(infer_cfg, split)
        if not chosen:
            raise ConfigError(f"no ground truth for the {split} queries under {cfg['data']['root']}: ablate "
                              "chooses on it; run `make data` (the toy) or download the solution file")
        reported = chosen if split == "test" else scored(infer_cfg, "test")
        row = scored_row(name, reported, reported_before) if reported else {"step": name}
        row["selected_on"] = {"map": round(chosen[part]["map"], 4), "ci95": [round(x, 4) for x in chosen[part]["ci"]],
                              "queries": chosen[part]["queries"]}
        if chosen_before is not None:
            row["selected_on"]["gain"] = paired_bootstrap(chosen[part]["aps"], chosen_before[part]["aps"])
        row["kept"] = chosen_before is None or chosen[part]["map"] > chosen_before[part]["map"]
        row["infer"] = {k: v for k, v in infer_cfg.items() if k not in ("batch_size", "dtype", "shard_size")}
        rows.append(row)
        if row["kept"]:
            kept, chosen_before, reported_before = infer_cfg, chosen, reported or None
    best = max((i for i, r in enumerate(rows) if r["kept"]), key=lambda i: (rows[i]["selected_on"]["map"], -i))
    result = {"rows": rows, "selected_on": words, "selection": {"split": split, "part": part},
              "best": rows[best]["step"], "run": cfg["run"]["name"]}
    path = write_result(run / "ablation.json", "ablation", result, cfg)
    return {**result, "path": path}


def _gain(gain: dict | None) -> str:
    return format_gain(gain) if gain else ""


def gain_cell(row: dict, part: str) -> str:
    return _gain(row.get("gain", {}).get(part))


@result_table("ablation")
def table(result: dict) -> str:
    """The rows as markdown: the selection set's score and paired gain (what chose), then test's parts."""
    chosen_on = "validation" if result["selection"]["split"] == "val" else "Public"
    lines = [f"| step | {chosen_on} [95% CI] (chooses) | gain on {chosen_on} over the kept chain, paired | "
             "Public [95% CI] | Private [95% CI] | all [95% CI] |", "|---|---|---|---|---|---|"]
    for row in result["rows"]:
        mark = f" (best on {chosen_on})" if row["step"] == result["best"] else ""
        mark += "" if row.get("kept", True) else f" (lowers {chosen_on}: not kept)"
        sel = row["selected_on"]
        cells = [format_interval(row[k], row["ci95"][k]) if k in row else "n/a" for k in ("Public", "Private", "all")]
        lines.append(f"| {row['step']}{mark} | {format_interval(sel['map'], sel['ci95'])} | {_gain(sel.get('gain'))} | "
                     f"{cells[0]} | {cells[1]} | {cells[2]} |")
    return "\n".join(lines)
