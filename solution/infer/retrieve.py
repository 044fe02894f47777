"""Search plus post-processing, as configured in ``infer``: DBA, alpha-QE, diffusion, SuperGlobal, labels."""

from __future__ import annotations

import logging

import numpy as np

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


def retrieve(query: np.ndarray, index: np.ndarray, infer_cfg: dict, train: np.ndarray | None = None,
             train_labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(neighbours, scores), Q x topk index positions best first, after the enabled post-processing."""
    topk = min(infer_cfg["topk"], len(index))
    qe, dba, dif, sg, lab = (infer_cfg[name] for name in ("qe", "dba", "diffusion", "superglobal", "label_rerank"))
    depth = min(len(index), max(topk, sg["m"] if sg["enabled"] else 0))
    database = database_augmentation(index, dba["k"], dba["scheme"], dba["alpha"]) if dba["enabled"] else index
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
    if lab["enabled"]:
        if train is None or train_labels is None:
            raise ValueError("label re-ranking needs train descriptors and labels")
        q_labels, q_conf = vote_labels(query, train, train_labels, lab["k"])
        i_labels, i_conf = vote_labels(index, train, train_labels, lab["k"])
        neighbours = label_rerank(neighbours, q_labels, i_labels, i_conf, topk, lab["insert_threshold"], q_conf,
                                  lab["min_confidence"])
        scores = np.zeros(neighbours.shape, np.float32)
    return neighbours[:, :topk], scores[:, :topk]


def needs_train(infer_cfg: dict) -> bool:
    return bool(infer_cfg["label_rerank"]["enabled"])
