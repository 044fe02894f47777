"""The submit stage: checkpoint -> descriptors -> ranking -> validated submission CSV -> score."""

from __future__ import annotations

import logging
from pathlib import Path

from ..competition import load_competition
from ..config import run_dir
from ..model.net import load_checkpoint
from ..runtime import resolve_device
from .extract import save_features
from .pipeline import describe_split, rank, solution_scores
from .submission import SubmissionError, validate_submission, write_submission

log = logging.getLogger(__name__)


def make_submission(cfg: dict, out_dir: str | Path = "submissions") -> dict:
    comp = load_competition(cfg["competition"])
    data_root = cfg["data"]["root"]
    run = run_dir(cfg)
    device = resolve_device(cfg["run"]["device"])
    net, _ = load_checkpoint(run / "checkpoint.pt")
    net.to(device)
    workers = cfg["run"]["workers"]
    index, index_ids = describe_split(net, comp, data_root, "index", cfg["infer"], device, workers)
    test, test_ids = describe_split(net, comp, data_root, "test", cfg["infer"], device, workers)
    save_features(run / "features" / "index", index, index_ids)
    save_features(run / "features" / "test", test, test_ids)
    k = min(cfg["infer"]["topk"], comp.submission["max_predictions"])
    rankings = rank(test, test_ids, index, index_ids, k)
    path = Path(out_dir) / f"{comp.slug}-{cfg['run']['name']}{comp.submission['file_suffix']}"
    write_submission(path, rankings, test_ids, comp.submission["max_predictions"])
    problems = validate_submission(path, test_ids, index_ids, comp.submission["max_predictions"])
    if problems:
        raise SubmissionError("; ".join(problems))
    return {"submission": path, "scores": solution_scores(comp, data_root, rankings), "rows": len(test_ids)}
