"""Search plus post-processing, as configured in ``infer``: DBA, alpha-QE, diffusion, SuperGlobal, labels."""

from __future__ import annotations

import numpy as np

from .rerank import alpha_qe, database_augmentation, diffusion, label_rerank, superglobal_rerank, vote_labels
from .search import knn

STEPS = ("dba", "qe", "diffusion", "superglobal", "label_rerank")


def retrieve(query: np.ndarray, index: np.ndarray, infer_cfg: dict, train: np.ndarray | None = None,
             train_labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(neighbours, scores), Q x topk index positions best first, after the enabled post-processing."""
    topk = min(infer_cfg["topk"], len(index))
    qe, dba, dif, sg, lab = (infer_cfg[name] for name in ("qe", "dba", "diffusion", "superglobal", "label_rerank"))
    depth = min(len(index), max(topk, sg["m"] if sg["enabled"] else 0))
    database = database_augmentation(index, dba["k"], dba["scheme"], dba["alpha"]) if dba["enabled"] else index
    scores, neighbours = knn(query, database, depth)
    if qe["enabled"]:
        query = alpha_qe(query, database, neighbours, scores, qe["alpha"], qe["n"])
        scores, neighbours = knn(query, database, depth)
    if dif["enabled"]:
        scores, neighbours = diffusion(query, database, dif["k"], dif["kq"], dif["gamma"], dif["alpha"],
                                       dif["iterations"], depth)
    if sg["enabled"]:
        scores, neighbours = superglobal_rerank(query, database, neighbours, sg["m"], sg["k"], sg["beta"])
    if lab["enabled"]:
        if train is None or train_labels is None:
            raise ValueError("label re-ranking needs train descriptors and labels")
        q_labels, q_conf = vote_labels(query, train, train_labels, lab["k"])
        i_labels, i_conf = vote_labels(index, train, train_labels, lab["k"])
        neighbours = label_rerank(neighbours, q_labels, q_conf, i_labels, i_conf, topk, lab["insert_threshold"])
        scores = np.zeros(neighbours.shape, np.float32)
    return neighbours[:, :topk], scores[:, :topk]


def needs_train(infer_cfg: dict) -> bool:
    return bool(infer_cfg["label_rerank"]["enabled"])
