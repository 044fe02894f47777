"""Exact inner-product top-k with faiss, queries in chunks so memory stays index + chunk."""

from __future__ import annotations

import numpy as np


def _faiss():
    import faiss  # noqa: PLC0415 - import is slow and only search needs it

    return faiss


def build_index(database: np.ndarray, use_gpu: bool | None = None):
    """A flat inner-product index, on every GPU when there is one (``use_gpu=None``: auto)."""
    faiss = _faiss()
    database = np.ascontiguousarray(database, dtype=np.float32)
    index = faiss.IndexFlatIP(database.shape[1])
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if (use_gpu is None and gpus > 0) or use_gpu:
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(database)
    return index


def knn(queries: np.ndarray, database: np.ndarray, k: int, chunk: int = 65536,
        use_gpu: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, indices), each Q x min(k, N), best first."""
    k = min(k, len(database))
    index = build_index(database, use_gpu)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    scores = np.empty((len(queries), k), np.float32)
    indices = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), chunk):
        s, i = index.search(queries[start:start + chunk], k)
        scores[start:start + chunk], indices[start:start + chunk] = s, i
    return scores, indices
