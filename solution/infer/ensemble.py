"""The ensemble's runtime step: several runs' descriptors, each L2-normalised and scaled by its member's
weight, concatenated, PCA-whitened with the saved whitening and L2-normalised again (the 2018 winners'
ensemble). ``make submit`` on an ensemble YAML and the kernel run it; choosing the weights and fitting the
whitening is the study in ``solution/studies/ensemble.py``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..competition import Competition
from ..config import ConfigError, run_dir
from ..runtime import data_workers
from .features import CacheError, features, read_npz
from .pipeline import run_net
from .rerank import l2_normalise


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
    weights_on: str = "config"  # validation: the weights are the ones ``ensemble.tune_weights`` chose there


WHITENING_KEYS = ("members", "weights", "weight", "bias", "fitted_on")
# member weights tried, one member at a time, when ``ensemble.tune_weights`` searches them on validation
def load_whitening(path: str | Path) -> SavedWhitening:
    """``whitening.npz`` as ``ensemble`` saved it, each part checked; a damaged file is a CacheError that
    says how to rebuild it."""
    path = Path(path)
    fix = "run `make ensemble CONFIG=<ensemble yaml>` again to rewrite it"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run `make ensemble CONFIG=<ensemble yaml>` first")
    saved = read_npz(path, WHITENING_KEYS, "a whitening file written by `ensemble`", fix, optional=("weights_on",))
    if saved["weights"].dtype.kind not in "iuf" or saved["weight"].dtype.kind != "f":
        raise CacheError(f"{path} holds weights of dtype {saved['weights'].dtype} and a whitening of dtype "
                         f"{saved['weight'].dtype}, not numbers; {fix}")
    names, weights = [str(n) for n in saved["members"]], [float(w) for w in saved["weights"]]
    weight, bias, fitted_on = saved["weight"], saved["bias"], str(saved["fitted_on"])
    if len(names) != len(weights) or weight.ndim != 2 or bias.shape != (weight.shape[0],) or \
            not (np.isfinite(weight).all() and np.isfinite(bias).all()):
        raise CacheError(f"{path} holds {len(names)} members, {len(weights)} weights and a whitening of shape "
                         f"{weight.shape} with a bias of shape {bias.shape}, or values that are not finite; {fix}")
    return SavedWhitening(names, weights, (weight, bias) if weight.size else None, fitted_on,
                          str(saved.get("weights_on", "config")))


def check_whitening(path: Path, saved: SavedWhitening, listed: list[tuple[str, float]], member_dims: list[int],
                    ens: dict) -> None:
    """``saved`` (from ``path``) is the whitening these members and ``ens`` (the ensemble section) call for:
    the same runs and weights, fitted on the same split, ``whiten_dim`` rows over the members' concatenated
    dimensions (none when ``whiten_dim`` is 0)."""
    same_weights = saved.weights_on == "validation" or saved.weights == [w for _, w in listed]
    if saved.members != [run for run, _ in listed] or not same_weights or saved.fitted_on != ens["whiten_on"]:
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


