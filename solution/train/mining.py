"""Negatives for (query, positive) pairs: the hardest pool images, at most one per landmark."""

from __future__ import annotations

import numpy as np

from ..infer.search import knn


def _first_per_landmark(order, pool_labels: np.ndarray, own_label, neg_num: int) -> np.ndarray:
    """The first ``neg_num`` pool indices of ``order`` from distinct landmarks other than ``own_label`` (-1 pads)."""
    chosen = np.full(neg_num, -1, np.int64)
    used, filled = {own_label}, 0
    for j in order:
        if j < 0 or pool_labels[j] in used:
            continue
        used.add(pool_labels[j])
        chosen[filled] = j
        filled += 1
        if filled == neg_num:
            break
    return chosen


def select_negatives(query_desc: np.ndarray, query_labels: np.ndarray, pool_desc: np.ndarray,
                     pool_labels: np.ndarray, neg_num: int, candidates: int | None = None) -> np.ndarray:
    """Q x neg_num pool indices, nearest first; never the query's landmark, one image per landmark.

    A top-k search (not a sort of the whole Q x N matrix) keeps memory at Q x candidates. Rows that the
    candidates cannot fill are searched again four times deeper, up to the whole pool; only a pool with too
    few other landmarks leaves -1 padding.
    """
    candidates = min(len(pool_desc), candidates or max(4 * neg_num, neg_num + 20))
    chosen = np.full((len(query_desc), neg_num), -1, np.int64)
    todo = np.arange(len(query_desc))
    while len(todo):
        _, neighbours = knn(query_desc[todo], pool_desc, candidates)
        for q, row in zip(todo, neighbours):
            chosen[q] = _first_per_landmark(row, pool_labels, query_labels[q], neg_num)
        # A query whose candidates hold too few other landmarks is searched deeper, not dropped.
        todo = todo[(chosen[todo] < 0).any(1)]
        if candidates >= len(pool_desc):
            break
        candidates = min(len(pool_desc), 4 * candidates)
    return chosen


def random_negatives(query_labels: np.ndarray, pool_labels: np.ndarray, neg_num: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Q x neg_num random pool indices from other landmarks, one per landmark."""
    rows = [_first_per_landmark(rng.permutation(len(pool_labels)), pool_labels, label, neg_num)
            for label in query_labels]
    return np.asarray(rows, np.int64).reshape(len(query_labels), neg_num)
