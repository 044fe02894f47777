"""The paper's ablation at equal budget: every pooling head fine-tuned with the same recipe, then compared.

Each variant is the experiment's own configuration with only the head (and the layers it pools)
changed: same backbone, data, epochs, tuples, mining, whitening and seed. Each is an ordinary run
(``runs/<name>-heads-<variant>-s<seed>/``), so an interrupted ablation resumes where it stopped and a
finished variant is not trained again. Test mAP@100 is taken at a single scale before (off the shelf:
ImageNet weights, KL weights where used, whitening) and after fine-tuning, with per-query APs, so every
row is compared with REMAP on the same queries through a paired bootstrap.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..config import ConfigError, check_values, merge, run_dir
from ..metrics import bootstrap_interval, format_interval, paired_bootstrap
from .loop import train

log = logging.getLogger(__name__)

REFERENCE = "remap"
# name -> (label, changes to the model section); the layers are those the paper's variants pool.
VARIANTS: dict[str, tuple[str, dict]] = {
    "gem": ("GeM (last layer)", {"head": "gem", "layers": [-1]}),
    "mac": ("MAC (last layer)", {"head": "mac", "layers": [-1]}),
    "spoc": ("SPoC (last layer)", {"head": "spoc", "layers": [-1]}),
    "rmac": ("R-MAC (last layer)", {"head": "rmac", "layers": [-1]}),
    "rmac-multi": ("multi-layer R-MAC, uniform weights", {"head": "rmac", "layers": [-2, -1]}),
    "remap-nokl": ("REMAP without KL initialisation", {"head": "remap", "layers": [-2, -1], "kl": {"enabled": False}}),
    "remap-learned": ("REMAP, learned per-layer weights", {"head": "remap", "layers": [-2, -1],
                                                          "remap_layers": "learned"}),
    "remap-l2": ("REMAP, per-layer L2 (layer scale cancels)", {"head": "remap", "layers": [-2, -1],
                                                               "remap_layers": "l2"}),
    "remap-klmix": ("REMAP, KL weights blended half with uniform", {"head": "remap", "layers": [-2, -1],
                                                                    "kl": {"enabled": True, "uniform_mix": 0.5}}),
    REFERENCE: ("REMAP (weights across regions and layers, KL-initialised)",
                {"head": "remap", "layers": [-2, -1], "remap_layers": "sum", "kl": {"enabled": True}}),
}


def variant_config(cfg: dict, variant: str, seed: int) -> dict:
    """``cfg`` with the variant's head and layers, its own run name and ``seed``; nothing else changes."""
    if variant not in VARIANTS:
        raise ConfigError(f"unknown head variant '{variant}'; choose from {', '.join(VARIANTS)}")
    out = copy.deepcopy(cfg)
    out["model"] = merge(out["model"], copy.deepcopy(VARIANTS[variant][1]), f"head variant {variant}")
    out["run"]["seed"] = seed
    out["run"]["name"] = f"{cfg['run']['name']}-heads-{variant}-s{seed}"
    out["train"]["eval_before"] = True  # the off-the-shelf column
    check_values(out)
    return out


def _mean_aps(summaries: list[dict], when: str) -> dict[str, float]:
    """Per-query AP averaged over seeds (the unit the bootstrap resamples is the query)."""
    queries = summaries[0][f"aps_{when}"]
    return {q: float(np.mean([s[f"aps_{when}"][q] for s in summaries])) for q in queries}


def ablate_heads(cfg: dict, variants: list[str], seeds: list[int]) -> dict:
    """Train (or resume) every variant for every seed, then the table against REMAP."""
    if REFERENCE not in variants:
        variants = [*variants, REFERENCE]
    results: dict[str, dict] = {}
    for variant in variants:
        summaries = []
        for seed in seeds:
            run_cfg = variant_config(cfg, variant, seed)
            log.info("head ablation: %s, seed %d -> %s", variant, seed, run_dir(run_cfg))
            summary = train(run_cfg)
            if not summary.get("aps_after") or not summary.get("aps_before"):
                raise ConfigError(f"run {run_dir(run_cfg)} has no per-query test APs (it finished before they were "
                                  "recorded); delete the run folder and run ablate-heads again")
            summaries.append(summary)
        results[variant] = {"before": _mean_aps(summaries, "before"), "after": _mean_aps(summaries, "after"),
                            "seconds": sum(s.get("seconds", 0) for s in summaries)}
    reference = results[REFERENCE]["after"]
    rows = []
    for variant in variants:
        before, after = results[variant]["before"], results[variant]["after"]
        row = {"variant": variant, "label": VARIANTS[variant][0], "model": VARIANTS[variant][1],
               "off_the_shelf": _scored(before), "fine_tuned": _scored(after),
               "gain": paired_bootstrap(after, before), "train_seconds": round(results[variant]["seconds"])}
        if variant != REFERENCE:
            row["remap_minus_this"] = paired_bootstrap(reference, after)
        rows.append(row)
    rows.sort(key=lambda r: -r["fine_tuned"]["map"])
    out = {"rows": rows, "seeds": seeds, "queries": len(reference), "best": rows[0]["variant"],
           "recipe": {k: cfg["train"][k] for k in ("epochs", "tuples_per_epoch", "tuples_per_step", "neg_num",
                                                  "image_size", "lr", "negatives")},
           "backbone": cfg["model"]["backbone"], "whiten_dim": cfg["model"]["whiten_dim"]}
    folder = Path(cfg["run"]["dir"]) / f"{cfg['run']['name']}-heads"
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "heads.json") as tmp:
        tmp.write_text(json.dumps(out, indent=2))
    with atomic_path(folder / "heads.md") as tmp:
        tmp.write_text(table(out) + "\n")
    return {**out, "path": folder / "heads.md"}


def _scored(aps: dict[str, float]) -> dict:
    values = np.fromiter(aps.values(), float, len(aps))
    return {"map": float(values.mean()), "ci": bootstrap_interval(values)}


def verdict(out: dict) -> str:
    """Whether REMAP wins: best, and ahead of every other row by >= 0.03 with a paired interval above 0."""
    others = [r for r in out["rows"] if r["variant"] != REFERENCE]
    if out["best"] != REFERENCE:
        best = out["rows"][0]
        diff = best["remap_minus_this"]
        return (f"REMAP is not best: {best['label']} leads it by {-diff['diff']:.4f} (REMAP minus it "
                f"{format_interval(diff['diff'], (diff['low'], diff['high']), signed=True)})")
    closest = min(others, key=lambda r: r["remap_minus_this"]["diff"])
    diff = closest["remap_minus_this"]
    won = diff["diff"] >= 0.03 and diff["low"] > 0
    return (f"REMAP is best; over the runner-up, {closest['label']}, it leads by "
            f"{format_interval(diff['diff'], (diff['low'], diff['high']), signed=True)}: "
            + ("a win by the issue's bar (>= 0.03, interval above 0)" if won else
               "not a win by the bar (>= 0.03 with the paired interval above 0)"))


def table(out: dict) -> str:
    lines = ["| head | off the shelf [95% CI] | fine-tuned [95% CI] | gain, paired | REMAP minus this, paired | "
             "train s |", "|---|---|---|---|---|---|"]
    for row in out["rows"]:
        cells = [format_interval(row[k]["map"], row[k]["ci"]) for k in ("off_the_shelf", "fine_tuned")]
        gain = row["gain"]
        cells.append(format_interval(gain["diff"], (gain["low"], gain["high"]), signed=True))
        diff = row.get("remap_minus_this")
        cells.append(format_interval(diff["diff"], (diff["low"], diff["high"]), signed=True) if diff else "")
        lines.append(f"| {row['label']} | " + " | ".join(cells) + f" | {row['train_seconds']} |")
    lines.append("")
    lines.append(f"{out['queries']} scored queries, seeds {out['seeds']}; intervals: 95% bootstrap over queries "
                 "(paired where two rows are compared). " + verdict(out) + ".")
    return "\n".join(lines)
