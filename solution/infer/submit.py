"""The submit stage: checkpoint -> TTA descriptors -> search + post-processing -> validated CSV -> score."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..competition import load_competition
from ..config import run_dir, writable_folder
from .pipeline import id_rankings, run_net, search_competition, solution_scores
from .submission import SubmissionError, validate_submission, write_submission

log = logging.getLogger(__name__)


def save_ranking(path: Path, query_ids: list[str], index_ids: list[str], neighbours: np.ndarray,
                 scores: np.ndarray) -> None:
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.savez(handle, query_ids=np.array(query_ids), index_ids=np.array(index_ids), neighbours=neighbours,
                 scores=scores)


def make_submission(cfg: dict, out_dir: str | Path = "submissions") -> dict:
    comp = load_competition(cfg["competition"])
    out_dir = writable_folder(out_dir, "--out")  # before the extraction, not after
    run = run_dir(cfg)
    net, device = run_net(cfg)
    neighbours, scores, test_ids, index_ids = search_competition(net, comp, cfg, cfg["infer"], device)
    save_ranking(run / "ranking.npz", test_ids, index_ids, neighbours, scores)
    rankings = id_rankings(test_ids, index_ids, neighbours)
    path = Path(out_dir) / f"{comp.slug}-{cfg['run']['name']}{comp.submission['file_suffix']}"
    write_submission(path, rankings, test_ids, comp.submission["max_predictions"])
    problems = validate_submission(path, test_ids, index_ids, comp.submission["max_predictions"])
    if problems:
        raise SubmissionError("; ".join(problems))
    return {"submission": path, "scores": solution_scores(comp, cfg["data"]["root"], rankings), "rows": len(test_ids),
            "ranking": run / "ranking.npz"}
