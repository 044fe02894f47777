"""Inner-product top-k with faiss: exact (flat) or IVF-PQ, on every GPU when present, queries in chunks.

Memory stays at index + one chunk of queries: the index holds the only copy of
the database (``index_vectors`` views a flat index's storage without copying).
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def _faiss():
    import faiss  # noqa: PLC0415 - slow to import, and only search needs it

    return faiss


def gpu_count() -> int:
    faiss = _faiss()
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def _to_gpus(index, shard: bool):
    faiss = _faiss()
    options = faiss.GpuMultipleClonerOptions()
    options.shard = shard  # shard: each GPU holds a slice of the database; else replicas
    return faiss.index_cpu_to_all_gpus(index, co=options)


def build_index(database: np.ndarray, use_gpu: bool | None = None, kind: str = "flat", nlist: int = 1024,
                m: int = 64, nprobe: int = 32, train_size: int = 200_000, seed: int = 0):
    """An inner-product index over ``database``: ``flat`` (exact) or ``ivfpq`` (compressed, approximate)."""
    faiss = _faiss()
    database = np.ascontiguousarray(database, dtype=np.float32)
    dim = database.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "ivfpq":
        nlist = max(1, min(nlist, len(database) // 39))  # faiss wants ~39 training points per centroid
        index = faiss.index_factory(dim, f"IVF{nlist},PQ{m}", faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(seed).choice(len(database), min(train_size, len(database)), replace=False)
        index.train(database[np.sort(sample)])
        index.nprobe = nprobe
    else:
        raise ValueError(f"unknown index type '{kind}'; use flat or ivfpq")
    if (use_gpu is None and gpu_count() > 0) or use_gpu:
        index = _to_gpus(index, shard=True)
    index.add(database)
    return index


def index_vectors(index) -> np.ndarray:
    """A read-only N x D view of a CPU flat index's vectors (no copy)."""
    faiss = _faiss()
    return faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)


def search(index, queries: np.ndarray, k: int, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """(scores, indices), each Q x min(k, N), best first; -1 where an approximate index found fewer."""
    k = min(k, index.ntotal)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    scores = np.empty((len(queries), k), np.float32)
    indices = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), chunk):
        s, i = index.search(queries[start:start + chunk], k)
        scores[start:start + chunk], indices[start:start + chunk] = s, i
    return scores, indices


def knn(queries: np.ndarray, database: np.ndarray, k: int, chunk: int = 65536,
        use_gpu: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k: (scores, indices), each Q x min(k, N), best first."""
    return search(build_index(database, use_gpu), queries, k, chunk)


def recall_at_k(approximate: np.ndarray, exact: np.ndarray, k: int = 100) -> float:
    """Mean fraction of each query's exact top-k that the approximate top-k also returns."""
    k = min(k, exact.shape[1], approximate.shape[1])
    hits = [len(set(a[:k].tolist()) & set(e[:k].tolist())) / k for a, e in zip(approximate, exact)]
    return float(np.mean(hits)) if hits else float("nan")
