"""Does fine-tuning on the toy carry over to real photographs? Off the shelf against fine-tuned, same views.

``initial.pt`` (saved by training once KL weights and whitening are fitted, before any step) is the
off-the-shelf net; ``checkpoint.pt`` the fine-tuned one. Both describe the real-photo set of
``data/photos.py`` at a single scale; every scene view queries all other images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_path
from ..config import run_dir
from ..data.photos import generate, leave_one_out
from ..metrics import average_precision_at_k, bootstrap_interval, format_interval, paired_bootstrap
from ..model.net import RetrievalNet
from ..runtime import data_workers
from .extract import extract_descriptors
from .pipeline import run_net


def photo_aps(net: RetrievalNet, root: Path, image_size: int, device: torch.device, workers: int,
              k: int = 100) -> dict[str, float]:
    """AP@k of every scene view against all other images (itself left out), keyed by file name."""
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
    return aps


def transfer_check(cfg: dict, photos_root: str | Path) -> dict:
    """mAP@100 on the real photographs off the shelf and fine-tuned, and the paired change."""
    run = run_dir(cfg)
    initial, final = run / "initial.pt", run / "checkpoint.pt"
    for path in (initial, final):
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; run `make train` (training writes both "
                                    "initial.pt and checkpoint.pt)")
    workers, image_size = data_workers(cfg["run"]["workers"]), cfg["infer"]["image_size"]
    scores = {}
    for name, path in (("off_the_shelf", initial), ("fine_tuned", final)):
        net, device = run_net(cfg, path)
        aps = photo_aps(net, Path(photos_root), image_size, device, workers)
        values = np.fromiter(aps.values(), float, len(aps))
        scores[name] = {"map": float(values.mean()), "ci": bootstrap_interval(values), "aps": aps}
    change = paired_bootstrap(scores["fine_tuned"]["aps"], scores["off_the_shelf"]["aps"])
    result = {name: {k: v for k, v in part.items() if k != "aps"} for name, part in scores.items()}
    result.update(change=change, queries=len(scores["fine_tuned"]["aps"]))
    with atomic_path(run / "transfer.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    return {**result, "path": run / "transfer.json"}


def summary_line(result: dict) -> str:
    off, tuned, change = result["off_the_shelf"], result["fine_tuned"], result["change"]
    verdict = ("lower: fine-tuning on the toy hurt real photographs" if change["high"] < 0 else
               "higher" if change["low"] > 0 else "no change beyond the interval")
    return (f"real photos mAP@100 over {result['queries']} queries: off the shelf "
            f"{format_interval(off['map'], off['ci'])} -> fine-tuned {format_interval(tuned['map'], tuned['ci'])}; "
            f"change {format_interval(change['diff'], (change['low'], change['high']), signed=True)} ({verdict})")
