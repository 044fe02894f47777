"""What ``train`` and ``submit`` report: their result files and the tables rendered from them."""

from __future__ import annotations

from ..infer.retrieve import STEPS
from ..metrics import format_gain, format_interval, paired_bootstrap, rounded
from ..results import result_table

PARTS = ("Public", "Private", "all")


def _scored(summary: dict, prefix: str, when: str) -> dict | None:
    value = summary.get(f"{prefix}map_{when}")
    if value is None:
        return None
    return {**rounded({"map": value, "ci": summary.get(f"{prefix}ci_{when}", [value, value])}),
            "queries": len(summary.get(f"{prefix}aps_{when}", {}))}


def _gain(summary: dict, prefix: str) -> dict | None:
    before, after = summary.get(f"{prefix}aps_before"), summary.get(f"{prefix}aps_after")
    if not before or not after:
        return None
    return rounded(paired_bootstrap(after, before))


def train_report(summary: dict, cfg: dict, selected_on: str, transfer: dict | None = None) -> dict:
    """The result file of a training run: test (and validation) mAP@100 before and after, with intervals
    and the paired gain, the time, the recipe, and what was selected on."""
    report = {"run": cfg["run"]["name"], "seconds": summary.get("seconds"), "selected_on": selected_on,
              "recipe": {**{k: cfg["train"][k] for k in ("epochs", "tuples_per_epoch", "image_size", "lr", "loss")},
                         **({"arcface": cfg["train"]["arcface"]} if "arcface" in cfg["train"]["loss"] else {})},
              "head": cfg["model"]["head"], "backbone": cfg["model"]["backbone"]}
    for split, prefix in (("test", ""), ("validation", "val_")):
        if _scored(summary, prefix, "after") is not None:
            report[split] = {"before": _scored(summary, prefix, "before"), "after": _scored(summary, prefix, "after"),
                             "gain": _gain(summary, prefix)}
    if summary.get("weights_moved"):
        report["weights_moved"] = summary["weights_moved"]
    if transfer is not None:
        report["transfer"] = {k: transfer[k] for k in ("off_the_shelf", "fine_tuned", "change", "queries",
                                                       "photographs", "margin", "verdict")}
    return report


def _cell(part: dict | None) -> str:
    return format_interval(part["map"], part["ci"]) if part else "n/a"


def _gain_cell(gain: dict | None) -> str:
    return format_gain(gain) if gain else "n/a"


def _query_counts(result: dict) -> str:
    """"440 scored queries per set" where every set has as many, else each set's count."""
    counts = {name: result[name]["after"]["queries"] for name in ("validation", "test") if name in result}
    if len(set(counts.values())) == 1:
        return f"{next(iter(counts.values()))} scored queries per set"
    return "scored queries: " + ", ".join(f"{count} {name}" for name, count in counts.items())


@result_table("train")
def train_table(result: dict) -> str:
    splits = [s for s in ("validation", "test") if s in result]
    lines = ["| mAP@100 [95% CI] | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for label, key in (("off the shelf", "before"), ("fine-tuned", "after")):
        lines.append(f"| {label} | " + " | ".join(_cell(result[s][key]) for s in splits) + " |")
    lines.append("| gain, paired | " + " | ".join(_gain_cell(result[s]["gain"]) for s in splits) + " |")
    recipe = result["recipe"]
    loss = recipe.get("loss")  # result files before the key trained the triplet and did not say so
    if loss and "arcface" in loss:
        arc = recipe["arcface"]
        loss = (f"{loss} ({arc['subcenters']} sub-centre(s), "
                + ("margins by class frequency" if arc["dynamic"] else f"margin {arc['margin']}") + ")")
    lines += ["", f"Run `{result['run']}`: {result['backbone']} + {result['head']}"
              + (f", loss {loss}" if loss else "") + f", {recipe['epochs']} epochs of "
              f"{recipe['tuples_per_epoch']} tuples at {recipe['image_size']} px, trained in {result['seconds']} s; "
              f"one scale; {_query_counts(result)}. Selected on: "
              f"{result['selected_on']}."]
    if "weights_moved" in result:
        from .region_weights import moved_line

        lines.append(f"REMAP region weights moved from their KL start (change over the layer's mean start weight): "
                     f"{moved_line(result['weights_moved'])}.")
    if "transfer" in result:
        t = result["transfer"]
        lines.append(f"Real photographs ({t['queries']} hard views of {t['photographs']} photographs, intervals over "
                     f"photographs): off the shelf {_cell(t['off_the_shelf'])}, fine-tuned {_cell(t['fine_tuned'])}, "
                     f"change {_gain_cell(t['change'])}; non-inferiority margin {t['margin']:+.2f}, set before the "
                     f"run: **{t['verdict']}**.")
    return "\n".join(lines)


def submit_report(result: dict, cfg: dict) -> dict:
    """The result file of a submission: each part's mAP@100 with its interval, the steps and the features."""
    infer = cfg["infer"]
    steps = [s for s in STEPS if infer[s]["enabled"]]
    return {"run": cfg["run"]["name"], "submission": str(result["submission"]), "rows": result["rows"],
            "scales": infer["scales"], "flip": infer["flip"], "image_size": infer["image_size"], "steps": steps,
            "parts": {k: {**rounded({"map": v["map"], "ci": v["ci"]}), "queries": v["queries"]}
                      for k, v in result.get("intervals", {}).items()}}


@result_table("submit")
def submit_table(result: dict) -> str:
    parts = [p for p in PARTS if p in result["parts"]]
    lines = ["| " + " | ".join(f"{p} [95% CI]" for p in parts) + " |", "|" + "---|" * len(parts),
             "| " + " | ".join(_cell(result["parts"][p]) for p in parts) + " |", "",
             f"`{result['submission']}` ({result['rows']} rows): {len(result['scales'])} scale(s) "
             f"{result['scales']} at {result['image_size']} px{', flip' if result['flip'] else ''}; "
             f"steps: {', '.join(result['steps']) or 'none'}."]
    return "\n".join(lines)
