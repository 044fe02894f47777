"""The paper's ablation at equal budget: every pooling head fine-tuned with the same recipe, then compared.

Each variant is the experiment's own configuration with only the head (and the layers it pools)
changed: same backbone, data, epochs, tuples, mining, whitening and seed. Each is an ordinary run
(``runs/<name>-heads-<variant>-s<seed>/``), so an interrupted ablation resumes where it stopped and a
finished variant is not trained again. Every run records per-query APs at a single scale on the validation
queries (after fine-tuning) and on test (before: ImageNet weights, KL weights where used, whitening; and
after). The best head is chosen on validation; test is reported. Rows are compared with REMAP on the same
queries, and over several seeds the intervals hold the training run's variance too.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

from ..atomic import atomic_path
from ..config import ConfigError, check_values, merge, run_dir
from ..metrics import format_interval, hierarchical_bootstrap, rounded
from ..results import result_table, write_result
from ..train.loop import train

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
    "gem-nearest": ("GeM, nearest positives seen whole", {"head": "gem", "layers": [-1]}),
    "remap-nearest": ("REMAP, nearest positives seen whole", {"head": "remap", "layers": [-2, -1],
                                                                "remap_layers": "sum", "kl": {"enabled": True}}),
    REFERENCE: ("REMAP (weights across regions and layers, KL-initialised)",
                {"head": "remap", "layers": [-2, -1], "remap_layers": "sum", "kl": {"enabled": True}}),
    "remap-gem": ("REMAP, regions pooled by GeM (learned p)",
                  {"head": "remap", "layers": [-2, -1], "remap_layers": "sum", "kl": {"enabled": True},
                   "region_pool": "gem"}),
    "remap-progressive": ("REMAP, second epoch at the inference size (192 px)",
                          {"head": "remap", "layers": [-2, -1], "remap_layers": "sum", "kl": {"enabled": True}}),
    "remap-uncapped": ("REMAP, final ReLU6 made a ReLU (no region maximum stuck at the cap)",
                       {"head": "remap", "layers": [-2, -1], "remap_layers": "sum", "kl": {"enabled": True},
                        "uncap_final": True}),
}
# The loss of each head: "<head variant>-arcface" trains it with sub-center ArcFace (k=3) and dynamic margins,
# the GLR 2021 winners' loss, in place of the triplet; nothing else changes.
SUBCENTER_ARCFACE = {"loss": "arcface", "arcface": {"subcenters": 3, "dynamic": True}}
for _name in ("gem", "remap", "remap-gem"):
    VARIANTS[f"{_name}-arcface"] = (f"{VARIANTS[_name][0]}, sub-center ArcFace", VARIANTS[_name][1])
# the variants that change the training recipe rather than the head: name -> changes to the train section
RECIPES: dict[str, dict] = {
    **{name: {"positives": "nearest", "positive_view": "whole"} for name in ("gem-nearest", "remap-nearest")},
    **{f"{name}-arcface": SUBCENTER_ARCFACE for name in ("gem", "remap", "remap-gem")},
    "remap-progressive": {"size_schedule": [[2, 192]]},
}
for _name in VARIANTS:  # every other variant trains the triplet, whatever loss the experiment's config trains
    if not _name.endswith("-arcface"):
        RECIPES[_name] = {**RECIPES.get(_name, {}), "loss": "triplet"}


def variant_config(cfg: dict, variant: str, seed: int) -> dict:
    """``cfg`` with the variant's head and layers, its own run name and ``seed``; nothing else changes."""
    if variant not in VARIANTS:
        raise ConfigError(f"unknown head variant '{variant}'; choose from {', '.join(VARIANTS)}")
    out = copy.deepcopy(cfg)
    out["model"] = merge(out["model"], copy.deepcopy(VARIANTS[variant][1]), f"head variant {variant}")
    out["train"] = merge(out["train"], copy.deepcopy(RECIPES.get(variant, {})), f"head variant {variant}")
    out["run"]["seed"] = seed
    out["run"]["name"] = f"{cfg['run']['name']}-heads-{variant}-s{seed}"
    out["train"]["eval_before"] = True  # the off-the-shelf column
    check_values(out)
    return out


# summary keys per measurement: (per-query APs key in a run's summary, words)
MEASURES = {"val_after": ("val_aps_after", "validation, fine-tuned"),
            "test_before": ("aps_before", "test, off the shelf"),
            "test_after": ("aps_after", "test, fine-tuned")}


def _runs(summaries: list[dict], measure: str) -> list[dict[str, float]]:
    return [s[MEASURES[measure][0]] for s in summaries]


def ablate_heads(cfg: dict, variants: list[str], seeds: list[int]) -> dict:
    """Train (or resume) every variant for every seed, then the table against REMAP.

    The best head is chosen on the validation queries (``val.csv``), where the competition has them, and
    test is only reported. With several seeds every interval is a hierarchical bootstrap (seeds, then
    queries), so it holds the training run's variance as well as the queries'."""
    if REFERENCE not in variants:
        variants = [*variants, REFERENCE]
    runs: dict[str, list[dict]] = {}
    for variant in variants:
        runs[variant] = []
        for seed in seeds:
            run_cfg = variant_config(cfg, variant, seed)
            log.info("head ablation: %s, seed %d -> %s", variant, seed, run_dir(run_cfg))
            summary = train(run_cfg)
            if not summary.get("aps_after") or not summary.get("aps_before"):
                raise ConfigError(f"run {run_dir(run_cfg)} has no per-query test APs (it finished before they were "
                                  "recorded); delete the run folder and run ablate-heads again")
            runs[variant].append(summary)
    chosen_on = "val_after" if all(s.get("val_aps_after") for v in runs.values() for s in v) else "test_after"
    rows = []
    for variant in variants:
        mine = runs[variant]
        row = {"variant": variant, "label": VARIANTS[variant][0], "model": VARIANTS[variant][1],
               **({"train": RECIPES[variant]} if variant in RECIPES else {}),
               **{m: rounded(hierarchical_bootstrap(_runs(mine, m))) for m in MEASURES
                  if all(s.get(MEASURES[m][0]) for s in mine)},
               "gain": rounded(hierarchical_bootstrap(_runs(mine, "test_after"), _runs(mine, "test_before"))),
               "train_seconds": round(sum(s.get("seconds", 0) for s in mine))}
        if variant != REFERENCE:
            reference = runs[REFERENCE]
            row["remap_minus_this"] = {m: rounded(hierarchical_bootstrap(_runs(reference, m), _runs(mine, m)))
                                       for m in dict.fromkeys((chosen_on, "test_after"))}
        rows.append(row)
    rows.sort(key=lambda r: -r[chosen_on]["mean"])
    best = runs[rows[0]["variant"]]
    for row in rows[1:]:  # how far each row is behind the best one, where the default head is chosen
        row["best_minus_this"] = rounded(hierarchical_bootstrap(_runs(best, chosen_on),
                                                                _runs(runs[row["variant"]], chosen_on)))
    out = {"rows": rows, "seeds": seeds, "queries": rows[0]["test_after"]["queries"],
           "chosen_on": chosen_on, "best": rows[0]["variant"],
           "recipe": {k: cfg["train"][k] for k in ("epochs", "tuples_per_epoch", "tuples_per_step", "neg_num",
                                                  "image_size", "lr", "negatives")},
           "backbone": cfg["model"]["backbone"], "whiten_dim": cfg["model"]["whiten_dim"]}
    folder = Path(cfg["run"]["dir"]) / f"{cfg['run']['name']}-heads"
    folder.mkdir(parents=True, exist_ok=True)
    write_result(folder / "heads.json", "heads", out, cfg)
    with atomic_path(folder / "heads.md") as tmp:
        tmp.write_text(table(out) + "\n")
    return {**out, "path": folder / "heads.md"}


def _cell(stats: dict | None, signed: bool = False) -> str:
    if not stats:
        return ""
    return format_interval(stats["mean"], (stats["low"], stats["high"]), signed=signed)


def is_remap(row: dict) -> bool:
    """A REMAP row in either region pooling, trained the default way (not a positive-choice study)."""
    return row["model"].get("head") == "remap" and row.get("train", {}).get("positives") != "nearest"


def default_head(out: dict) -> tuple[dict, str]:
    """(the row whose head and loss become the default, why): the best row on the selection set, unless a
    REMAP row (either pooling) ties it, its difference's interval containing 0: the repo is built around REMAP
    and a tie is not a loss, so the best-scoring tied REMAP row is chosen then."""
    best = out["rows"][0]
    if is_remap(best):
        return best, "REMAP scores best"
    tied = [r for r in out["rows"][1:] if is_remap(r) and "best_minus_this" in r
            and r["best_minus_this"]["low"] <= 0]
    if tied:
        return tied[0], (f"it ties the best row, {best['label']} (best minus it "
                         f"{_cell(tied[0]['best_minus_this'], True)}), and a tie goes to REMAP")
    remap = next((r for r in out["rows"] if is_remap(r) and "best_minus_this" in r), None)
    lead = f" (best minus the best REMAP row {_cell(remap['best_minus_this'], True)})" if remap else ""
    return best, f"it beats every REMAP row{lead}"


def verdict(out: dict) -> str:
    """Whether REMAP wins on the selection set: best, and ahead of every other row by >= 0.03 with an interval
    above 0; then whether test agrees (reported, never chosen on)."""
    chosen_on = out["chosen_on"]
    where = "validation" if chosen_on == "val_after" else "test (no validation split: chosen and reported on it)"
    others = [r for r in out["rows"] if r["variant"] != REFERENCE]
    if out["best"] != REFERENCE:
        best = out["rows"][0]
        diff = best["remap_minus_this"]
        text = (f"On {where}, REMAP is not best: {best['label']} leads it (REMAP minus it "
                f"{_cell(diff[chosen_on], True)})")
        if chosen_on != "test_after":
            text += f"; on test, REMAP minus it is {_cell(diff['test_after'], True)}"
        return text
    closest = min(others, key=lambda r: r["remap_minus_this"][chosen_on]["mean"])
    diff = closest["remap_minus_this"]
    won = diff[chosen_on]["mean"] >= 0.03 and diff[chosen_on]["low"] > 0
    text = (f"On {where}, REMAP is best; over the runner-up, {closest['label']}, it leads by "
            f"{_cell(diff[chosen_on], True)}: "
            + ("a win by the bar (>= 0.03, interval above 0)" if won else
               "not a win by the bar (>= 0.03 with the interval above 0)"))
    if chosen_on != "test_after":
        text += f"; on test, {_cell(diff['test_after'], True)}"
    return text


def interval_words(out: dict) -> str:
    seeds = len(out["seeds"])
    if seeds > 1:
        return (f"95% hierarchical bootstrap over {seeds} training seeds and then the {out['queries']} scored "
                "queries (seeds drawn apart for the two rows of a difference, queries drawn paired)")
    return f"95% bootstrap over the {out['queries']} scored queries (paired for a difference); one seed"


@result_table("heads")
def table(out: dict) -> str:
    chooses = "validation" if out["chosen_on"] == "val_after" else "test"
    lines = [f"| head | {chooses}, fine-tuned (chooses) | REMAP minus this, {chooses} | test, off the shelf | "
             f"test, fine-tuned | gain on test | REMAP minus this, test | test per seed | best minus this, {chooses} "
             "| train s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in out["rows"]:
        diff = row.get("remap_minus_this", {})
        cells = [_cell(row[out["chosen_on"]]), _cell(diff.get(out["chosen_on"]), True),
                 _cell(row["test_before"]), _cell(row["test_after"]), _cell(row["gain"], True),
                 _cell(diff.get("test_after"), True), ", ".join(f"{m:.4f}" for m in row["test_after"]["per_seed"])]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + f" | {_cell(row.get('best_minus_this'), True)} | "
                     f"{row['train_seconds']} |")
    lines.append("")
    rule = ""
    if any("best_minus_this" in row for row in out["rows"]):  # result files before the rule lack the column
        chosen, why = default_head(out)
        rule = f" By the default rule the default is **{chosen['label']}**: {why}."
    lines.append(f"Seeds {out['seeds']}; intervals: {interval_words(out)}. {verdict(out)}.{rule} train s: wall "
                 "seconds summed over the seeds (on a shared machine: not a speed comparison).")
    return "\n".join(lines)
