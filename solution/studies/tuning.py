"""The search settings chosen on validation: QE's n and alpha, DBA's k, the label re-ranking's k and gate.

Only search-side keys are tuned (they never change the cached features, so every trial is a search, not
an extraction). One key at a time, in :data:`GRID`'s order, the others held at their current values
(coordinate ascent, ``passes`` times): each value is scored on the validation queries' "all" part, and a
value replaces the current one only when its mAP@100 is higher. Steps that are off in the config are not
tuned. The search's best replaces the config's settings only when its paired gain on validation has an
interval above 0 (``adopt``): a greedy search over many values finds a higher point estimate by chance
alone, and a tie is no reason to move a default. Test is scored twice, to report: with the settings the
search started from and with its best, paired on the same queries. Its solution file is never read before
the choice is made.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from ..competition import load_competition
from ..config import ConfigError, _nest, check_values, run_dir
from ..infer.pipeline import id_rankings, run_net, search_competition, solution_intervals
from ..metrics import format_gain, format_interval, paired_bootstrap, rounded
from ..results import result_table, write_result
from .ablation import selection

# "step.key": values tried. The toy's index shows each landmark 2-6 times, hence the small n and k. The label
# re-ranking's vote, query, gate and insertion are the parts of the GLR 2019 winners' version, each measured.
GRID: dict[str, list] = {
    "qe.n": [1, 2, 3, 5, 10],
    "qe.alpha": [1.0, 3.0, 5.0],
    "dba.k": [2, 3, 5, 10],
    "label_rerank.k": [1, 3, 5],
    "label_rerank.vote": ["similarity", "yokoo"],
    "label_rerank.query": ["expanded", "own"],
    "label_rerank.min_confidence": [0.0, 1.0, 2.0, 3.0, 4.0],
    "label_rerank.gate": ["both", "insert"],
    "label_rerank.insert_threshold": [1.0e9, 0.0, 1.0, 2.0],
}


def setting_of(infer: dict, key: str):
    """The value of ``step.key`` in an infer section."""
    step, name = key.split(".")
    return infer[step][name]


def _set(infer: dict, key: str, value) -> dict:
    out = copy.deepcopy(infer)
    step, name = key.split(".")
    out[step][name] = value
    return out


def parse_grid(items: list[str] | None) -> dict[str, list]:
    """``["qe.n=1,2,3", ...]`` -> {"qe.n": [1, 2, 3]}; None -> :data:`GRID`. A key whose values are words
    (``label_rerank.vote=similarity,yokoo``) takes words from :data:`GRID`'s list."""
    if not items:
        return dict(GRID)
    grid = {}
    for item in items:
        key, _, values = item.partition("=")
        if key not in GRID or not values:
            raise ConfigError(f"--grid {item}: want step.key=v1,v2,... with step.key one of {', '.join(GRID)}")
        if isinstance(GRID[key][0], str):
            words = [v.strip() for v in values.split(",")]
            unknown = [w for w in words if w not in GRID[key]]
            if unknown:
                raise ConfigError(f"--grid {item}: {', '.join(unknown)} is not one of {', '.join(GRID[key])}")
            grid[key] = words
            continue
        try:
            grid[key] = [int(v) if v.strip().lstrip("-").isdigit() else float(v) for v in values.split(",")]
        except ValueError:
            raise ConfigError(f"--grid {item}: the values must be numbers, e.g. qe.n=1,2,3") from None
        for value in grid[key]:  # a value the config refuses must not be tried, let alone reported as the best
            try:
                check_values(_nest(["infer", *key.split(".")], value))
            except ConfigError as exc:
                raise ConfigError(f"--grid {item}: {exc}") from None
    return grid



def enabled_grid(infer: dict, grid: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """The part of ``grid`` (default :data:`GRID`) whose steps are on in ``infer``."""
    return {k: v for k, v in (grid or GRID).items() if infer[k.split(".")[0]]["enabled"]}


def coordinate_search(scored: Callable[[dict, str], dict[str, dict]], start: dict, grid: dict[str, list[float]],
                      split: str, part: str, passes: int = 1) -> dict:
    """One key at a time over ``grid`` from the settings ``start`` (``passes`` rounds), scored on ``split``'s
    ``part`` by ``scored(infer, split)``. Returns the best settings, whether to adopt them (paired gain over
    the start with its interval above 0), the trials and the scores of start and best."""
    current, best = start, scored(start, split)
    if not best:
        raise ConfigError(f"no ground truth for the {split} queries: the search chooses on it; run `make data` "
                          "(the toy) or download the solution file")
    start_scores, trials = best, []
    for round_ in range(passes):
        for key, values in grid.items():
            for value in values:
                same = value == setting_of(current, key)  # the current settings: already scored
                trial = _set(current, key, value)
                result = best if same else scored(trial, split)
                trials.append({"pass": round_ + 1, "key": key, "value": value, "map": round(result[part]["map"], 4),
                               "ci95": [round(x, 4) for x in result[part]["ci"]],
                               "fixed": {k: setting_of(current, k) for k in grid if k != key}})
                if not same and result[part]["map"] > best[part]["map"]:
                    current, best = trial, result
    gain = rounded(paired_bootstrap(best[part]["aps"], start_scores[part]["aps"]))
    return {"best": current, "adopt": bool(gain["low"] > 0), "trials": trials, "gain": gain,
            "start_scores": start_scores, "best_scores": best}


def tune(cfg: dict, grid: dict[str, list[float]] | None = None, passes: int = 1) -> dict:
    """Choose the search settings on validation; report start and choice on test. Writes ``tune.json``."""
    comp = load_competition(cfg["competition"])
    split, part, words = selection(comp)
    net, device = run_net(cfg)
    grid = enabled_grid(cfg["infer"], grid)
    if not grid:
        raise ConfigError("no enabled step to tune: turn on infer.qe, infer.dba or infer.label_rerank")

    def scored(infer: dict, queries: str) -> dict[str, dict]:
        neighbours, _, query_ids, index_ids = search_competition(net, comp, cfg, infer, device, queries)
        return solution_intervals(comp, cfg["data"]["root"], id_rankings(query_ids, index_ids, neighbours), queries)

    start = copy.deepcopy(cfg["infer"])
    found = coordinate_search(scored, start, grid, split, part, passes)
    current = found["best"]
    report = {"adopt": found["adopt"], "run": cfg["run"]["name"], "selected_on": words,
              "selection": {"split": split, "part": part}, "start": {k: setting_of(start, k) for k in grid},
              "chosen": {k: setting_of(current, k) for k in grid}, "passes": passes, "trials": found["trials"],
              "validation": {"start": round(found["start_scores"][part]["map"], 4),
                             "chosen": round(found["best_scores"][part]["map"], 4), "gain": found["gain"]}}
    test_start = scored(start, "test")
    test_chosen = test_start if current == start else scored(current, "test")
    if test_start:
        report["test"] = {name: {"start": round(test_start[name]["map"], 4),
                                 "chosen": round(test_chosen[name]["map"], 4),
                                 "ci95": [round(x, 4) for x in test_chosen[name]["ci"]],
                                 "gain": rounded(paired_bootstrap(test_chosen[name]["aps"], test_start[name]["aps"]))}
                          for name in test_chosen}
    path = write_result(run_dir(cfg) / "tune.json", "tune", report, cfg)
    return {**report, "path": path}


@result_table("tune")
def table(result: dict) -> str:
    """Every trial on the selection set, then the choice and its paired gains (validation, then test)."""
    chooses = "validation" if result["selection"]["split"] == "val" else "Public"
    lines = [f"| setting | value | {chooses} mAP@100 [95% CI] | others held at |", "|---|---|---|---|"]
    for trial in result["trials"]:
        mark = " **(best)**" if result["chosen"][trial["key"]] == trial["value"] and all(
            result["chosen"][k] == v for k, v in trial["fixed"].items()) else ""
        held = ", ".join(f"{k}={v}" for k, v in trial["fixed"].items())
        lines.append(f"| `{trial['key']}` | {trial['value']}{mark} | {format_interval(trial['map'], trial['ci95'])} "
                     f"| {held} |")
    start = ", ".join(f"{k}={v}" for k, v in result["start"].items())
    chosen = ", ".join(f"{k}={v}" for k, v in result["chosen"].items())
    val = result["validation"]
    verdict = ("its interval is above 0: adopt it" if result["adopt"] else
               "a tie (the interval contains 0), so the config's settings stay")
    lines += ["", f"Started from {start}; the best on {chooses} was {chosen} ({val['start']:.4f} -> "
              f"{val['chosen']:.4f}, paired {format_gain(val['gain'])}): {verdict}."]
    if "test" in result:
        cells = "; ".join(f"{name} {part['start']:.4f} -> {part['chosen']:.4f}, paired {format_gain(part['gain'])}"
                          for name, part in result["test"].items())
        lines.append(f"Test, the start against the search's best, reported and not chosen on: {cells}.")
    return "\n".join(lines)
