"""Does fine-tuning on the toy carry over to real photographs? Off the shelf against fine-tuned, same views.

``initial.pt`` (saved by training once KL weights and whitening are fitted, before any step) is the
off-the-shelf net; ``checkpoint.pt`` the fine-tuned one. Both describe the real-photo set of
``data/photos.py`` at a single scale; every scene view queries all other images. Intervals resample
source photographs (the views of one photograph are not independent), and the verdict is a
non-inferiority test against ``train.transfer_margin``, set before the run: fine-tuning passes when the
whole interval of its change lies above the margin, fails when the whole interval lies below it, and is
inconclusive otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_path
from ..config import run_dir
from ..data.photos import generate, leave_one_out
from ..infer.extract import extract_descriptors
from ..infer.pipeline import run_net
from ..metrics import average_precision_at_k, cluster_bootstrap, format_interval, rounded
from ..model.net import RetrievalNet
from ..runtime import data_workers


def photo_aps(net: RetrievalNet, root: Path, image_size: int, device: torch.device, workers: int,
              k: int = 100) -> tuple[dict[str, float], dict[str, str]]:
    """AP@k of every scene view against all other images (itself left out), keyed by file name, and the
    source photograph of each."""
    truth = generate(root)
    paths = [root / name for name in truth["images"]]
    descriptors, _ = extract_descriptors(net, paths, image_size, 32, device, workers, desc="real photos")
    similarity = descriptors @ descriptors.T
    np.fill_diagonal(similarity, -np.inf)
    queries, relevant = leave_one_out(truth)
    names = truth["images"]
    aps = {}
    for q in queries:
        order = np.argsort(-similarity[q], kind="stable")[:k]
        aps[names[q]] = average_precision_at_k([names[i] for i in order], {names[i] for i in relevant[q]}, k)
    return aps, {names[q]: truth["source"][q] for q in queries}


def transfer_check(cfg: dict, photos_root: str | Path) -> dict:
    """mAP@100 on the real photographs off the shelf and fine-tuned, and the paired change."""
    run = run_dir(cfg)
    initial, final = run / "initial.pt", run / "checkpoint.pt"
    for path in (initial, final):
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; run `make train` (training writes both "
                                    "initial.pt and checkpoint.pt)")
    workers, image_size = data_workers(cfg["run"]["workers"]), cfg["infer"]["image_size"]
    scores, sources = {}, {}
    for name, path in (("off_the_shelf", initial), ("fine_tuned", final)):
        net, device = run_net(cfg, path)
        aps, sources = photo_aps(net, Path(photos_root), image_size, device, workers)
        scores[name] = aps
    margin = float(cfg["train"]["transfer_margin"])
    result = {name: _scored(cluster_bootstrap(aps, sources)) for name, aps in scores.items()}
    change = cluster_bootstrap(scores["fine_tuned"], sources, scores["off_the_shelf"])
    result.update(change=rounded({"diff": change["mean"], "low": change["low"], "high": change["high"],
                                  "excludes_zero": change["excludes_zero"]}),
                  queries=change["queries"], photographs=change["clusters"], margin=margin,
                  verdict=verdict(change, margin))
    with atomic_path(run / "transfer.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    return {**result, "path": run / "transfer.json"}


def _scored(stats: dict) -> dict:
    return rounded({"map": stats["mean"], "ci": [stats["low"], stats["high"]]})


def verdict(change: dict, margin: float) -> str:
    """Non-inferiority of fine-tuned against off the shelf, at ``margin`` (a negative mAP change)."""
    if change["low"] > margin:
        return "pass"
    if change["high"] < margin:
        return "fail"
    return "inconclusive"


VERDICT_WORDS = {"pass": "not worse than off the shelf by more than the margin",
                 "fail": "worse than off the shelf by more than the margin: the recipe needs changing",
                 "inconclusive": "the interval straddles the margin: neither shown"}


def summary_line(result: dict) -> str:
    off, tuned, change = result["off_the_shelf"], result["fine_tuned"], result["change"]
    return (f"real photos mAP@100 over {result['queries']} hard views of {result['photographs']} photographs: off "
            f"the shelf {format_interval(off['map'], off['ci'])} -> fine-tuned "
            f"{format_interval(tuned['map'], tuned['ci'])}; change "
            f"{format_interval(change['diff'], (change['low'], change['high']), signed=True)} (95% bootstrap over "
            f"photographs); margin {result['margin']:+.2f}: {result['verdict']}, {VERDICT_WORDS[result['verdict']]}")
