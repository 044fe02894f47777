"""The submit stage: checkpoint -> TTA descriptors -> search + post-processing -> validated CSV -> score."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..competition import Competition, load_competition
from ..config import run_dir, writable_folder
from .pipeline import id_rankings, run_net, search_competition, solution_intervals
from .submission import SubmissionError, validate_submission, write_submission

log = logging.getLogger(__name__)


def save_ranking(path: Path, query_ids: list[str], index_ids: list[str], neighbours: np.ndarray,
                 scores: np.ndarray, made_by: dict) -> None:
    """The ranking ``viz retrieval`` draws, with what made it (``made_by``: the features folder, the
    checkpoint, the post-processing), so a picture is never taken for another run's."""
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.savez(handle, query_ids=np.array(query_ids), index_ids=np.array(index_ids), neighbours=neighbours,
                 scores=scores, made_by=np.array(json.dumps(made_by, sort_keys=True, default=str)))


def provenance(net_meta: dict, infer_cfg: dict) -> dict:
    """What a ranking was made from: the checkpoint file, the features folder and the search steps."""
    from .features import tta_tag
    from .retrieve import STEPS

    return {"checkpoint": net_meta.get("fingerprint", ""), "features": tta_tag(infer_cfg),
            "steps": [step for step in STEPS if infer_cfg.get(step, {}).get("enabled")]}


def load_ranking(path: str | Path) -> tuple[list[str], list[str], np.ndarray, dict]:
    """(query ids, index ids, neighbours, what made it) from a ``ranking.npz`` that ``submit`` wrote, each part
    checked: one row of index positions (or -1) per query."""
    from .features import CacheError, read_npz

    fix = "run `make submit` again to rewrite it"
    try:
        data = read_npz(path, ("query_ids", "index_ids", "neighbours"), "a ranking written by `submit`", fix,
                        optional=("made_by",))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist; run `make submit` first") from None
    query_ids, index_ids = [str(q) for q in data["query_ids"]], [str(i) for i in data["index_ids"]]
    neighbours = data["neighbours"]
    try:
        made_by = json.loads(str(data["made_by"])) if "made_by" in data else {}  # rankings written before it
    except ValueError:
        raise CacheError(f"{path} is not a ranking written by `submit` (its made_by is not JSON); {fix}") from None
    if neighbours.ndim != 2 or len(neighbours) != len(query_ids) or neighbours.dtype.kind not in "iu" or (
            neighbours.size and (neighbours.min() < -1 or neighbours.max() >= len(index_ids))):
        raise CacheError(f"{path} holds {neighbours.shape} neighbours of dtype {neighbours.dtype} for "
                         f"{len(query_ids)} queries and {len(index_ids)} index images; {fix}")
    return query_ids, index_ids, neighbours, made_by


def write_ranked_submission(comp: Competition, cfg: dict, out_dir: str | Path, test_ids: list[str],
                            index_ids: list[str], neighbours: np.ndarray, scores: np.ndarray, made_by: dict
                            ) -> tuple[Path, dict[str, list[str]]]:
    """The one place a search becomes a submission (``submit`` and the ensemble): NaN scores refused, the CSV
    written to ``<out_dir>/<slug>-<run><suffix>`` and validated, then the ranking ``viz retrieval`` draws saved
    in the run with ``made_by``. Returns (the CSV, {query id: index ids})."""
    scores = np.asarray(scores)
    if scores.size and not np.isfinite(scores[neighbours >= 0] if scores.shape == neighbours.shape else scores).all():
        # a ranking by NaN scores is an arbitrary order: never written, let alone called validated
        raise SubmissionError(f"the search gave NaN or inf scores for {int((~np.isfinite(scores)).any(axis=-1).sum())} "
                              "queries (non-finite descriptors or post-processing settings); nothing was written")
    rankings = id_rankings(test_ids, index_ids, neighbours)
    path = Path(out_dir) / f"{comp.slug}-{cfg['run']['name']}{comp.submission['file_suffix']}"
    write_submission(path, rankings, test_ids, comp.submission["max_predictions"])
    problems = validate_submission(path, test_ids, index_ids, comp.submission["max_predictions"])
    if problems:
        raise SubmissionError("; ".join(problems))
    save_ranking(run_dir(cfg) / "ranking.npz", test_ids, index_ids, neighbours, scores, made_by)  # once it stands
    return path, rankings


def make_submission(cfg: dict, out_dir: str | Path = "submissions") -> dict:
    comp = load_competition(cfg["competition"])
    out_dir = writable_folder(out_dir, "--out")  # before the extraction, not after
    run = run_dir(cfg)
    net, device = run_net(cfg)
    neighbours, scores, test_ids, index_ids = search_competition(net, comp, cfg, cfg["infer"], device)
    path, rankings = write_ranked_submission(comp, cfg, out_dir, test_ids, index_ids, neighbours, scores,
                                             provenance(net.meta, cfg["infer"]))
    intervals = solution_intervals(comp, cfg["data"]["root"], rankings)
    return {"submission": path, "scores": {k: v["map"] for k, v in intervals.items()}, "rows": len(test_ids),
            "ranking": run / "ranking.npz", "intervals": intervals}
