"""The submit stage: checkpoint -> TTA descriptors -> search + post-processing -> validated CSV -> score."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..competition import load_competition
from ..config import run_dir
from ..data.gldv2 import read_train_clean
from ..model.net import load_checkpoint
from ..runtime import resolve_device
from .features import features
from .pipeline import solution_scores
from .retrieve import needs_train, retrieve
from .submission import SubmissionError, validate_submission, write_submission

log = logging.getLogger(__name__)


def save_ranking(path: Path, query_ids: list[str], index_ids: list[str], neighbours: np.ndarray,
                 scores: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, query_ids=np.array(query_ids), index_ids=np.array(index_ids), neighbours=neighbours,
             scores=scores)
    os.replace(tmp, path)


def make_submission(cfg: dict, out_dir: str | Path = "submissions") -> dict:
    comp = load_competition(cfg["competition"])
    data_root, infer_cfg = cfg["data"]["root"], cfg["infer"]
    run = run_dir(cfg)
    device = resolve_device(cfg["run"]["device"])
    net, _ = load_checkpoint(run / "checkpoint.pt")
    net.to(device).eval()
    workers = cfg["run"]["workers"]
    index, index_ids = features(net, comp, data_root, "index", run / "features", infer_cfg, device, workers)
    test, test_ids = features(net, comp, data_root, "test", run / "features", infer_cfg, device, workers)
    train = train_labels = None
    if needs_train(infer_cfg):
        train, train_ids = features(net, comp, data_root, "train", run / "features", infer_cfg, device, workers)
        labels = read_train_clean(comp.csv_path(data_root, "train_clean_csv")).set_index("id")["landmark_id"]
        train_labels = labels.loc[train_ids].to_numpy()
    neighbours, scores = retrieve(test, index, infer_cfg, train, train_labels)
    save_ranking(run / "ranking.npz", test_ids, index_ids, neighbours, scores)
    rankings = {q: [index_ids[j] for j in row if j >= 0] for q, row in zip(test_ids, neighbours)}
    path = Path(out_dir) / f"{comp.slug}-{cfg['run']['name']}{comp.submission['file_suffix']}"
    write_submission(path, rankings, test_ids, comp.submission["max_predictions"])
    problems = validate_submission(path, test_ids, index_ids, comp.submission["max_predictions"])
    if problems:
        raise SubmissionError("; ".join(problems))
    return {"submission": path, "scores": solution_scores(comp, data_root, rankings), "rows": len(test_ids),
            "ranking": run / "ranking.npz"}
