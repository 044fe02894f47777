"""Search plus post-processing, as configured in ``infer``: DBA, alpha-QE, diffusion, SuperGlobal, labels."""

from __future__ import annotations

import logging

import numpy as np

from ..config import check_pairs
from .rerank import (
    alpha_qe,
    database_augmentation,
    diffusion,
    diffusion_neighbours,
    label_rerank,
    superglobal_rerank,
    truncated_diffusion,
    vote_labels,
)
from .search import build_index, knn, recall_at_k, search

log = logging.getLogger(__name__)


def _searcher(database: np.ndarray, index_cfg: dict):
    """The configured index over ``database``; for IVF-PQ, its recall against exact search is logged."""
    if index_cfg["type"] == "flat":
        index = build_index(database)
        return lambda queries, k: search(index, queries, k)
    index = build_index(database, kind="ivfpq", nlist=index_cfg["nlist"], m=index_cfg["m"],
                        nprobe=index_cfg["nprobe"])

    def run(queries, k):
        scores, neighbours = search(index, queries, k)
        sample = queries[: index_cfg["recall_sample"]]
        exact = knn(sample, database, k)[1]
        log.info("IVF-PQ recall@%d against exact search on %d queries: %.4f", k, len(sample),
                 recall_at_k(neighbours[: len(sample)], exact, k))
        return scores, neighbours

    return run

STEPS = ("dba", "qe", "diffusion", "superglobal", "label_rerank")


def _say_clamps(infer_cfg: dict, n_index: int, n_train: int | None) -> None:
    """Neighbour counts larger than what they are taken from are cut to it; the log says so, once a call."""
    asks = [("dba.k", infer_cfg["dba"], "k", n_index - 1), ("qe.n", infer_cfg["qe"], "n", n_index),
            ("diffusion.k", infer_cfg["diffusion"], "k", n_index - 1),
            ("label_rerank.k", infer_cfg["label_rerank"], "k", n_train)]
    for name, step, key, available in asks:
        wanted = step.get(key)
        if step.get("enabled") and wanted is not None and available is not None and wanted > available:
            log.warning("infer.%s=%d is more than the %d there are to take: %d are used", name, wanted, available,
                        available)


def retrieve(query: np.ndarray, index: np.ndarray, infer_cfg: dict, train: np.ndarray | None = None,
             train_labels: np.ndarray | None = None, in_place: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(neighbours, scores), Q x topk index positions best first, after the enabled post-processing.

    The database is searched as ``infer.index.dtype`` (float32, or float16 for half the memory). With
    ``in_place`` the caller hands ``index`` over: DBA overwrites it (through a spill file in
    ``infer.index.spill_dir``, the system's temporary folder when null)
    instead of making a second copy, which is what lets a 1M x 4096 float16 index fit 1.5x its size.
    Without it, ``index`` is left as it was.
    """
    topk = min(infer_cfg["topk"], len(index))
    qe, dba, dif, sg, lab = (infer_cfg[name] for name in ("qe", "dba", "diffusion", "superglobal", "label_rerank"))
    if lab["enabled"] and (train is None or train_labels is None):
        raise ValueError("label re-ranking needs train descriptors and labels")
    check_pairs({"infer": infer_cfg})  # the rules between steps live in config.py, for every caller
    depth = min(len(index), max(topk, sg["m"] if sg["enabled"] else 0))
    _say_clamps(infer_cfg, len(index), None if train is None else len(train))
    # The index's own labels are voted on its descriptors as extracted, before DBA may overwrite them.
    index_votes = vote_labels(index, train, train_labels, lab["k"], lab["vote"]) if lab["enabled"] else None
    dtype = np.dtype(infer_cfg["index"].get("dtype", "float32"))
    database, owned = index, in_place
    if database.dtype != dtype:
        database, owned = database.astype(dtype), True
    if dba["enabled"]:
        database = database_augmentation(database, dba["k"], dba["scheme"], dba["alpha"], owned,
                                         infer_cfg["index"].get("spill_dir"))
        database = database.astype(dtype, copy=False)
    searcher = _searcher(database, infer_cfg["index"])
    original = query  # SuperGlobal refines with the query as described, not the QE-expanded one
    scores, neighbours = searcher(query, depth)
    if qe["enabled"]:
        query = alpha_qe(query, database, neighbours, scores, qe["alpha"], qe["n"])
        scores, neighbours = searcher(query, depth)
    k = (dif["k"] or diffusion_neighbours(len(database))) if dif["enabled"] else 0
    if dif["enabled"] and dif["truncate"]:
        scores, neighbours = truncated_diffusion(query, database, dif["truncate"], k, min(dif["kq"], k),
                                                 dif["gamma"], dif["alpha"], dif["iterations"], depth)
    elif dif["enabled"]:
        scores, neighbours = diffusion(query, database, k, min(dif["kq"], k), dif["gamma"], dif["alpha"],
                                       dif["iterations"], depth)
    if sg["enabled"]:
        scores, neighbours = superglobal_rerank(original, database, neighbours, sg["m"], sg["k"], sg["beta"])
    if index_votes is not None:
        voter = original if lab["query"] == "own" else query  # own: as described, not QE-expanded (Yokoo)
        q_labels, q_conf = vote_labels(voter, train, train_labels, lab["k"], lab["vote"])
        i_labels, i_conf = index_votes
        neighbours = label_rerank(neighbours, q_labels, i_labels, i_conf, topk, lab["insert_threshold"], q_conf,
                                  lab["min_confidence"], lab["gate"])
        scores = np.zeros(neighbours.shape, np.float32)
    return neighbours[:, :topk], scores[:, :topk]


def needs_train(infer_cfg: dict) -> bool:
    return bool(infer_cfg["label_rerank"]["enabled"])
