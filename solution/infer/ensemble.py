"""The 2018 winners' ensemble: several runs' descriptors, weighted, concatenated and PCA-whitened.

Per member (a run: its head, backbone or checkpoint) the descriptors are L2-normalised and scaled by
the member's weight, then concatenated. PCA-whitening to ``ensemble.whiten_dim`` is fitted on train
descriptors or on the index (what the 2018 entry did), then everything is L2-normalised again and
searched with the usual post-processing. Members reuse the feature shards they already extracted
(``runs/<member>/features/<tta>/``), so adding a member costs one extraction, once. The whitening is
saved with the ensemble run, and each member is also scored alone with the same post-processing, so
the ensemble is compared with its best member on the same queries.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..atomic import atomic_path
from ..competition import Competition, load_competition
from ..config import ConfigError, run_dir, writable_folder
from ..metrics import paired_bootstrap
from ..model.whitening import fit_pca_whitening
from ..runtime import data_workers
from .features import CacheError, features, read_npz
from .pipeline import id_rankings, run_net, solution_intervals, train_labels
from .rerank import l2_normalise
from .retrieve import needs_train, retrieve
from .submission import SubmissionError, validate_submission, write_submission
from .submit import provenance, save_ranking


def members(cfg: dict) -> list[tuple[str, float]]:
    """(run name, weight) of every member; each must have a checkpoint."""
    listed = cfg["ensemble"]["members"]
    if not listed:
        raise ConfigError("ensemble.members is empty; list the runs to combine, e.g. "
                          "[{run: toy, weight: 1.0}, {run: toy-heads-rmac-s0, weight: 0.5}]")
    out = []
    for entry in listed:  # their form (plain run names, finite weights > 0, no repeats) is a config rule
        checkpoint = Path(cfg["run"]["dir"]) / entry["run"] / "checkpoint.pt"
        if not checkpoint.is_file():
            raise FileNotFoundError(f"ensemble member {entry['run']}: {checkpoint} does not exist; train that run "
                                    "first (or fix its name in ensemble.members)")
        out.append((entry["run"], float(entry.get("weight", 1.0))))
    return out


def member_nets(cfg: dict) -> dict[str, tuple]:
    """Each member's (net, device, features folder), loaded once for every split."""
    out = {}
    for run, _ in members(cfg):
        member_cfg = copy.deepcopy(cfg)
        member_cfg["run"]["name"] = run
        out[run] = (*run_net(member_cfg), run_dir(member_cfg) / "features")
    return out


def concatenated(cfg: dict, comp: Competition, nets: dict[str, tuple],
                 split: str) -> tuple[list[np.ndarray], list[str]]:
    """Per member: L2-normalised descriptors of ``split`` with the ensemble's TTA, from (or into) that run's
    own shards (same id order for every member)."""
    parts, ids = [], None
    for run, (net, device, folder) in nets.items():
        rows, member_ids = features(net, comp, cfg["data"]["root"], split, folder, cfg["infer"], device,
                                    data_workers(cfg["run"]["workers"]))
        if ids is not None and member_ids != ids:
            raise ConfigError(f"ensemble member {run} described {split} in another order or set of images; "
                              "its features are from another data set: delete its features/ folder")
        ids = member_ids
        parts.append(l2_normalise(rows.astype(np.float32)))
    return parts, ids


def combine(parts: list[np.ndarray], weights: list[float]) -> np.ndarray:
    return np.hstack([part * weight for part, weight in zip(parts, weights)]).astype(np.float32)


def whiten(rows: np.ndarray, whitening: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """The ensemble descriptor from a weighted concatenation: PCA-whitened when fitted, then L2."""
    return l2_normalise(rows if whitening is None else rows @ whitening[0].T + whitening[1])


def ensemble_descriptors(parts: list[np.ndarray], weights: list[float],
                         whitening: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """Members' descriptors of the same images -> the ensemble's: each L2-normalised and weighted,
    concatenated, whitened, L2-normalised (what ``ensemble`` searches and the kernel recomputes)."""
    return whiten(combine([l2_normalise(p.astype(np.float32)) for p in parts], weights), whitening)


class SavedWhitening(NamedTuple):
    """What ``ensemble`` saved in ``whitening.npz``."""
    members: list[str]
    weights: list[float]
    whitening: tuple[np.ndarray, np.ndarray] | None  # (weight, bias); None: whiten_dim 0
    fitted_on: str


WHITENING_KEYS = ("members", "weights", "weight", "bias", "fitted_on")


def load_whitening(path: str | Path) -> SavedWhitening:
    """``whitening.npz`` as ``ensemble`` saved it, each part checked; a damaged file is a CacheError that
    says how to rebuild it."""
    path = Path(path)
    fix = "run `make ensemble CONFIG=<ensemble yaml>` again to rewrite it"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run `make ensemble CONFIG=<ensemble yaml>` first")
    saved = read_npz(path, WHITENING_KEYS, "a whitening file written by `ensemble`", fix)
    if saved["weights"].dtype.kind not in "iuf" or saved["weight"].dtype.kind != "f":
        raise CacheError(f"{path} holds weights of dtype {saved['weights'].dtype} and a whitening of dtype "
                         f"{saved['weight'].dtype}, not numbers; {fix}")
    names, weights = [str(n) for n in saved["members"]], [float(w) for w in saved["weights"]]
    weight, bias, fitted_on = saved["weight"], saved["bias"], str(saved["fitted_on"])
    if len(names) != len(weights) or weight.ndim != 2 or bias.shape != (weight.shape[0],) or \
            not (np.isfinite(weight).all() and np.isfinite(bias).all()):
        raise CacheError(f"{path} holds {len(names)} members, {len(weights)} weights and a whitening of shape "
                         f"{weight.shape} with a bias of shape {bias.shape}, or values that are not finite; {fix}")
    return SavedWhitening(names, weights, (weight, bias) if weight.size else None, fitted_on)


def check_whitening(path: Path, saved: SavedWhitening, listed: list[tuple[str, float]], member_dims: list[int],
                    ens: dict) -> None:
    """``saved`` (from ``path``) is the whitening these members and ``ens`` (the ensemble section) call for:
    the same runs and weights, fitted on the same split, ``whiten_dim`` rows over the members' concatenated
    dimensions (none when ``whiten_dim`` is 0)."""
    if saved.members != [run for run, _ in listed] or saved.weights != [w for _, w in listed] or \
            saved.fitted_on != ens["whiten_on"]:
        raise CacheError(f"{path} was fitted on {saved.fitted_on} for members {saved.members} with weights "
                         f"{saved.weights}, not on {ens['whiten_on']} for this config's {listed}; run "
                         "`make ensemble CONFIG=<ensemble yaml>` again")
    whitening = saved.whitening
    rows = 0 if whitening is None else whitening[0].shape[0]
    columns = sum(member_dims) if whitening is None else whitening[0].shape[1]
    if rows != ens["whiten_dim"] or columns != sum(member_dims):
        raise CacheError(f"{path} whitens {columns} dimensions to {rows}, but this config's members give "
                         f"{sum(member_dims)} and ensemble.whiten_dim is {ens['whiten_dim']}; run "
                         "`make ensemble CONFIG=<ensemble yaml>` again to fit it for this config")


def run_ensemble(cfg: dict, out_dir: str | Path = "submissions") -> dict:
    comp = load_competition(cfg["competition"])
    out_dir = writable_folder(out_dir, "--out")
    run = run_dir(cfg)
    names, weights = zip(*members(cfg))
    ens = cfg["ensemble"]
    nets = member_nets(cfg)
    splits = {split: concatenated(cfg, comp, nets, split) for split in ("index", "test")}
    if ens["whiten_on"] == "train" and ens["whiten_dim"] or needs_train(cfg["infer"]):
        splits["train"] = concatenated(cfg, comp, nets, "train")
    combined = {split: combine(parts, list(weights)) for split, (parts, _) in splits.items()}
    whitening = None
    if ens["whiten_dim"]:
        weight, bias = fit_pca_whitening(combined[ens["whiten_on"]], ens["whiten_dim"], ens["whiten_shrinkage"])
        whitening = (weight.numpy(), bias.numpy())
    combined = {split: whiten(rows, whitening) for split, rows in combined.items()}
    run.mkdir(parents=True, exist_ok=True)
    with atomic_path(run / "whitening.npz") as tmp, tmp.open("wb") as handle:
        np.savez(handle, members=np.array(names), weights=np.array(weights),
                 weight=whitening[0] if whitening else np.zeros((0, 0)),
                 bias=whitening[1] if whitening else np.zeros(0), fitted_on=ens["whiten_on"])
    labels = train_labels(comp, cfg["data"]["root"], splits["train"][1]) if needs_train(cfg["infer"]) else None
    index_ids, test_ids = splits["index"][1], splits["test"][1]

    def scored(index: np.ndarray, test: np.ndarray, train: np.ndarray | None):
        neighbours, scores = retrieve(test, index, cfg["infer"], train, labels)
        rankings = id_rankings(test_ids, index_ids, neighbours)
        return rankings, solution_intervals(comp, cfg["data"]["root"], rankings), (neighbours, scores)

    rankings, parts, (neighbours, scores) = scored(combined["index"], combined["test"], combined.get("train"))
    made_by = {"members": [{"run": n, "weight": w} for n, w in zip(names, weights)],
               **{k: v for k, v in provenance({}, cfg["infer"]).items() if k != "checkpoint"}}
    save_ranking(run / "ranking.npz", test_ids, index_ids, neighbours, scores, made_by)  # for `viz retrieval`
    path = Path(out_dir) / f"{comp.slug}-{cfg['run']['name']}{comp.submission['file_suffix']}"
    write_submission(path, rankings, test_ids, comp.submission["max_predictions"])
    problems = validate_submission(path, test_ids, index_ids, comp.submission["max_predictions"])
    if problems:
        raise SubmissionError("; ".join(problems))
    report = {"members": [{"run": n, "weight": w} for n, w in zip(names, weights)],
              "whiten_on": ens["whiten_on"], "whiten_dim": ens["whiten_dim"],
              "dim": int(combined["test"].shape[1])}
    if parts:
        report["ensemble"] = _summary(parts)
        alone = {}
        for i, name in enumerate(names):
            train = splits["train"][0][i] if "train" in splits else None
            alone[name] = scored(splits["index"][0][i], splits["test"][0][i], train)[1]
        report["alone"] = {name: _summary(p) for name, p in alone.items()}
        best = max(alone, key=lambda name: alone[name]["Public"]["map"])  # chosen on Public, as every default
        report["best_member"] = best
        report["minus_best"] = {k: paired_bootstrap(parts[k]["aps"], alone[best][k]["aps"]) for k in parts}
    with atomic_path(run / "ensemble.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    return {**report, "submission": path, "rows": len(test_ids), "path": run / "ensemble.json"}


def _summary(parts: dict[str, dict]) -> dict[str, dict]:
    return {k: {"map": v["map"], "ci": list(v["ci"])} for k, v in parts.items()}
