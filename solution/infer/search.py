"""Inner-product top-k with faiss: exact (flat) or IVF-PQ, on every GPU when present (under torchrun on the
process's own GPU), queries in chunks.

Memory stays at index + one chunk of queries: the index holds the only copy of
the database (``index_vectors`` views a flat index's storage without copying).
"""

from __future__ import annotations

import functools
import logging
import os

import numpy as np

log = logging.getLogger(__name__)


@functools.cache
def _faiss():
    import faiss  # noqa: PLC0415 - slow to import, and only search needs it

    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if local_world > 1 and os.environ.get("OMP_NUM_THREADS") == "1":
        # torchrun pins every process to one OpenMP thread; CPU search then crawls. Share the cores instead.
        faiss.omp_set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    return faiss


def gpu_count() -> int:
    faiss = _faiss()
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


@functools.cache
def gpu_resources(gpu: int):
    """One StandardGpuResources per GPU per process, reused by every search (each holds temporary memory)."""
    return _faiss().StandardGpuResources()


def search_gpus() -> list[int]:
    """The GPUs a search may use: under torchrun only this process's own (LOCAL_RANK), else all of them."""
    count = gpu_count()
    if count == 0:
        return []
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return [int(os.environ.get("LOCAL_RANK", "0")) % count]
    return list(range(count))


def _to_gpus(index, gpus: list[int], float16: bool):
    """The index on ``gpus`` (sharded over several). ``float16``: IVF-PQ's lookup tables in float16, which
    m=64 needs on GPUs with 48 KiB of shared memory per block (T4)."""
    faiss = _faiss()
    if len(gpus) == 1:
        options = faiss.GpuClonerOptions()
        options.useFloat16 = float16
        return faiss.index_cpu_to_gpu(gpu_resources(gpus[0]), gpus[0], index, options)
    options = faiss.GpuMultipleClonerOptions()
    options.shard = True  # each GPU holds a slice of the database
    options.useFloat16 = float16
    return faiss.index_cpu_to_gpu_multiple_py([gpu_resources(g) for g in gpus], index, options, gpus)


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
    gpus = search_gpus() if use_gpu is not False else []
    if gpus:
        index = _to_gpus(index, gpus, float16=kind == "ivfpq")
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
