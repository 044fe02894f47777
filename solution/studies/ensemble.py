"""The ensemble study (the 2018 winners' ensemble): several runs' descriptors, weighted, concatenated and PCA-whitened.

Per member (a run: its head, backbone or checkpoint) the descriptors are L2-normalised and scaled by
the member's weight, then concatenated. PCA-whitening to ``ensemble.whiten_dim`` is fitted on train
descriptors or on the index (what the 2018 entry did), then everything is L2-normalised again and
searched with the usual post-processing. Members reuse the feature shards they already extracted
(``runs/<member>/features/<tta>/``), so adding a member costs one extraction, once. The whitening is
saved with the ensemble run, and each member is also scored alone with the same post-processing, so
the ensemble is compared with its best member on the same queries.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..competition import Competition, load_competition
from ..config import run_dir, writable_folder
from ..infer.ensemble import (
    combine,
    concatenated,
    member_nets,
    members,
    whiten,
)
from ..infer.pipeline import has_split, id_rankings, solution_intervals, train_labels
from ..infer.retrieve import needs_train, retrieve
from ..infer.submission import submission_rankings
from ..infer.submit import provenance, write_ranked_submission
from ..metrics import format_gain, format_interval, paired_bootstrap, rounded
from ..model.whitening import fit_pca_whitening
from ..results import result_table, write_result
from .tuning import coordinate_search, enabled_grid, setting_of

WEIGHT_GRID = [0.5, 1.0, 2.0]


def _scorer(comp: Competition, data_root: str, descriptors: dict[str, np.ndarray], ids: dict[str, list[str]],
            labels: np.ndarray | None) -> Callable[[dict, str], tuple[dict, tuple]]:
    """``score(infer, queries)`` -> (intervals per part, (neighbours, scores)) of one descriptor set."""
    def score(infer: dict, queries: str):
        neighbours, scores = retrieve(descriptors[queries], descriptors["index"], infer,
                                      descriptors.get("train"), labels)
        rankings = id_rankings(ids[queries], ids["index"], neighbours)
        return solution_intervals(comp, data_root, rankings, queries), (neighbours, scores)
    return score


def _settings(score, infer: dict, tune: bool, has_val: bool) -> tuple[dict, dict | None]:
    """The post-processing this descriptor is searched with: the config's, or, with ``tune`` and validation
    queries, the best of a search on them when its gain is clear (see ``tuning.coordinate_search``)."""
    grid = enabled_grid(infer)
    if not (tune and has_val and grid):
        return infer, None
    found = coordinate_search(lambda settings, split: score(settings, split)[0], infer, grid, "val", "all")
    chosen = found["best"] if found["adopt"] else infer
    return chosen, {"settings": {k: setting_of(chosen, k) for k in grid}, "adopt": found["adopt"],
                    "validation": _summary(found["best_scores"] if found["adopt"] else found["start_scores"])}


def run_ensemble(cfg: dict, out_dir: str | Path = "submissions") -> dict:
    """Search with the ensemble, write its submission, and, where the test solution is on disk, compare it
    on test (paired) with each member alone, with the first member through the same whitening (the
    one-member control) and with ``ensemble.against`` (e.g. the default ``make submit``); every descriptor
    gets the same TTA and, with ``ensemble.tune``, its own post-processing chosen on validation."""
    comp = load_competition(cfg["competition"])
    out_dir = writable_folder(out_dir, "--out")
    run = run_dir(cfg)
    names, weights = zip(*members(cfg))
    ens, root = cfg["ensemble"], cfg["data"]["root"]
    if ens["against"] and not Path(ens["against"]).is_file():  # before the members' extractions, not after
        raise FileNotFoundError(f"ensemble.against: {ens['against']} does not exist; make that submission first "
                                "(e.g. `make submit`) or set ensemble.against=null")
    nets = member_nets(cfg)
    has_val = has_split(comp, "val")
    wanted = ["index", "test", *(["val"] if has_val else [])]
    if ens["whiten_on"] == "train" and ens["whiten_dim"] or needs_train(cfg["infer"]):
        wanted.append("train")
    splits = {split: concatenated(cfg, comp, nets, split) for split in wanted}
    ids = {split: split_ids for split, (_, split_ids) in splits.items()}
    labels = train_labels(comp, root, ids["train"]) if needs_train(cfg["infer"]) else None
    weighted = None
    if ens["tune_weights"] and has_val and len(names) > 1:
        weighted = _weight_search(comp, root, splits, ids, labels, cfg["infer"], ens, list(weights))
        weights = weighted["chosen"]
    combined, whitening = _whitened(splits, list(weights), ens)
    run.mkdir(parents=True, exist_ok=True)
    with atomic_path(run / "whitening.npz") as tmp, tmp.open("wb") as handle:
        np.savez(handle, members=np.array(names), weights=np.array(weights),
                 weight=whitening[0] if whitening else np.zeros((0, 0)),
                 bias=whitening[1] if whitening else np.zeros(0), fitted_on=ens["whiten_on"],
                 weights_on="validation" if weighted and weighted["adopt"] else "config")
    score = _scorer(comp, root, combined, ids, labels)
    infer, tuned = _settings(score, cfg["infer"], ens["tune"], has_val)
    parts, (neighbours, scores) = score(infer, "test")
    made_by = {"members": [{"run": n, "weight": w} for n, w in zip(names, weights)],
               **{k: v for k, v in provenance({}, infer).items() if k != "checkpoint"}}
    path, rankings = write_ranked_submission(comp, cfg, out_dir, ids["test"], ids["index"], neighbours, scores,
                                             made_by)
    report = {"run": cfg["run"]["name"], "members": [{"run": n, "weight": w} for n, w in zip(names, weights)],
              "whiten_on": ens["whiten_on"], "whiten_dim": ens["whiten_dim"], "dim": int(combined["test"].shape[1]),
              "scales": cfg["infer"]["scales"], "flip": cfg["infer"]["flip"], "tuned_on_validation": tuned is not None}
    if weighted:
        report["weight_search"] = {k: v for k, v in weighted.items() if k != "chosen"}
    if parts:
        rows = {"ensemble": (parts, tuned)}
        for i, name in enumerate(names):
            alone = {split: member[i] for split, (member, _) in splits.items()}
            rows[f"{name} alone"] = _scored_alone(comp, root, alone, ids, labels, cfg["infer"], ens, has_val)
        control = {split: member[0] for split, (member, _) in splits.items()}
        own = _fit(control[ens["whiten_on"]], {**ens, "whiten_dim": min(ens["whiten_dim"], control["test"].shape[1])})
        rows[f"{names[0]} alone, whitened as the ensemble"] = _scored_alone(
            comp, root, {split: whiten(rows_, own) for split, rows_ in control.items()}, ids, labels, cfg["infer"],
            ens, has_val)
        report["rows"] = {name: {"test": _summary(p), **({"tuned": t} if t else {})} for name, (p, t) in rows.items()}
        report["minus"] = {name: rounded(paired_bootstrap(parts["all"]["aps"], p["all"]["aps"]))
                           for name, (p, _) in rows.items() if name != "ensemble"}
        if ens["against"]:
            against = solution_intervals(comp, root, submission_rankings(ens["against"]), "test")
            report["against"] = {"submission": str(ens["against"]), "test": _summary(against),
                                 "minus": rounded(paired_bootstrap(parts["all"]["aps"], against["all"]["aps"]))}
    path_json = write_result(run / "ensemble.json", "ensemble", report, cfg)
    return {**report, "submission": path, "rows_written": len(ids["test"]), "path": path_json,
            "scores": {k: v["map"] for k, v in parts.items()}}


def _whitened(splits: dict[str, tuple[list[np.ndarray], list[str]]], weights: list[float],
              ens: dict) -> tuple[dict[str, np.ndarray], tuple[np.ndarray, np.ndarray] | None]:
    """Every split's ensemble descriptors with ``weights``, and the whitening fitted for them."""
    combined = {split: combine(parts, weights) for split, (parts, _) in splits.items()}
    whitening = _fit(combined[ens["whiten_on"]], ens)
    return {split: whiten(rows, whitening) for split, rows in combined.items()}, whitening


def _weight_search(comp, root, splits, ids, labels, infer: dict, ens: dict, start: list[float]) -> dict:
    """Member weights searched on the validation queries (each member over :data:`WEIGHT_GRID`, one at a time,
    the whitening refitted for every trial, the config's post-processing), kept only when the paired gain over
    the config's weights has an interval above 0 (``tuning.coordinate_search``). Test is never whitened here:
    the search does not look at it."""
    chosen_on = {split: parts for split, parts in splits.items() if split != "test"}

    def scored(settings: dict, split: str) -> dict:
        combined, _ = _whitened(chosen_on, [settings["weights"][str(i)] for i in range(len(start))], ens)
        return _scorer(comp, root, combined, ids, labels)(infer, split)[0]

    found = coordinate_search(scored, {"weights": {str(i): w for i, w in enumerate(start)}},
                              {f"weights.{i}": WEIGHT_GRID for i in range(len(start))}, "val", "all")
    best = [found["best"]["weights"][str(i)] for i in range(len(start))]
    return {"start": start, "best": best, "adopt": found["adopt"], "chosen": best if found["adopt"] else start,
            "gain": found["gain"], "trials": len(found["trials"]),
            "validation": {"start": round(found["start_scores"]["all"]["map"], 4),
                           "best": round(found["best_scores"]["all"]["map"], 4)}}


def _fit(rows: np.ndarray, ens: dict) -> tuple[np.ndarray, np.ndarray] | None:
    if not ens["whiten_dim"]:
        return None
    weight, bias = fit_pca_whitening(rows, ens["whiten_dim"], ens["whiten_shrinkage"])
    return weight.numpy(), bias.numpy()


def _scored_alone(comp, root, descriptors, ids, labels, infer, ens, has_val) -> tuple[dict, dict | None]:
    score = _scorer(comp, root, descriptors, ids, labels)
    settings, tuned = _settings(score, infer, ens["tune"], has_val)
    return score(settings, "test")[0], tuned


def _summary(parts: dict[str, dict]) -> dict[str, dict]:
    return {k: rounded({"map": v["map"], "ci": v["ci"]}) for k, v in parts.items()}


def _cell(part: dict) -> str:
    return format_interval(part["map"], part["ci"])


@result_table("ensemble")
def table(result: dict) -> str:
    """Ensemble, members alone, the one-member control and the compared submission, on test; each with the
    settings it was searched with (chosen on validation where tuned) and the ensemble's paired lead."""
    lines = ["| descriptor | post-processing (validation all) | Public [95% CI] | Private [95% CI] | all [95% CI] | "
             "ensemble minus this, all, paired |", "|---|---|---|---|---|---|"]
    for name, row in result.get("rows", {}).items():
        tuned = row.get("tuned")
        setting = "as configured"
        if tuned:
            setting = (", ".join(f"{k}={v}" for k, v in tuned["settings"].items())
                       + (" (adopted)" if tuned["adopt"] else " (the config's: no clear gain)")
                       + f" ({tuned['validation']['all']['map']:.4f})")
        cells = " | ".join(_cell(row["test"][k]) for k in ("Public", "Private", "all"))
        minus = format_gain(result["minus"][name]) if name in result["minus"] else ""
        lines.append(f"| {name} | {setting} | {cells} | {minus} |")
    if "against" in result:
        against = result["against"]
        cells = " | ".join(_cell(against["test"][k]) for k in ("Public", "Private", "all"))
        lines.append(f"| `{against['submission']}` | as it was made | {cells} | {format_gain(against['minus'])} |")
    members = ", ".join(f"{m['run']} x{m['weight']}" for m in result["members"])
    lines += ["", f"Members: {members}; concatenation whitened to {result['whiten_dim']}-D on {result['whiten_on']}; "
              f"{len(result['scales'])} scale(s){', flip' if result['flip'] else ''}. The control is the first "
              "member through the same whitening."]
    if "weight_search" in result:
        w = result["weight_search"]
        verdict = "adopted" if w["adopt"] else "a tie (the interval contains 0), so the config's weights stay"
        lines.append(f"Member weights searched on validation ({w['trials']} trials, each member over "
                     f"{WEIGHT_GRID} in turn): best {w['best']} against the config's {w['start']}, "
                     f"{w['validation']['start']:.4f} -> {w['validation']['best']:.4f}, paired "
                     f"{format_gain(w['gain'])}: {verdict}.")
    return "\n".join(lines)
