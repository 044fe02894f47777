"""Post-processing of a retrieval: query expansion, database-side augmentation, diffusion,
SuperGlobal refinement and discriminative label re-ranking.

All descriptors are N x D float32 with L2-normalised rows; similarity is the
inner product. Definitions follow Radenovic et al. 2018 (alpha-QE, DBA), Iscen et al. 2017 (diffusion),
Shao et al. 2023 (SuperGlobal) and the GLR 2019 winners (label re-ranking).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .search import knn


def l2_normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def alpha_qe(queries: np.ndarray, database: np.ndarray, neighbours: np.ndarray, scores: np.ndarray,
             alpha: float = 3.0, n: int = 5) -> np.ndarray:
    """q' = norm(q + sum_{i<=n} max(sim_i, 0)^alpha d_i); alpha = 0 is average query expansion."""
    top, sims = neighbours[:, :n], np.clip(scores[:, :n], 0.0, None)
    weights = sims**alpha if alpha else np.ones_like(sims)
    weights = np.where(top >= 0, weights, 0.0).astype(np.float32)
    return _weighted_sum(queries, database, np.maximum(top, 0), weights)


def dba_weights(k: int, scheme: str, sims: np.ndarray, alpha: float) -> np.ndarray:
    """Weights of a vector's k-1 nearest others (its own weight is 1): ``alpha`` (sim^alpha, as alpha-QE) or
    ``logspace`` (the GLR 2018 entry's logspace(0, -1.5, k) over k vectors, self first)."""
    if scheme == "logspace":
        return np.broadcast_to(np.logspace(0, -1.5, k)[1:], sims.shape).astype(np.float32)
    return np.clip(sims, 0.0, None) ** alpha


def _weighted_sum(base: np.ndarray, vectors: np.ndarray, neighbours: np.ndarray, weights: np.ndarray,
                  chunk: int = 1024) -> np.ndarray:
    """norm(base + sum_k weights[:, k] * vectors[neighbours[:, k]]) as a new float32 array, whatever the
    storage, a chunk of rows at a time so the gathered neighbours never exceed chunk x k x D."""
    out = np.empty(base.shape, np.float32)
    for start in range(0, len(base), chunk):
        rows = slice(start, start + chunk)
        gathered = vectors[neighbours[rows]].astype(np.float32, copy=False)
        out[rows] = l2_normalise(base[rows].astype(np.float32, copy=False)
                                 + np.einsum("nk,nkd->nd", weights[rows], gathered))
    return out


def dba_neighbours(database: np.ndarray, k: int, scheme: str = "alpha", alpha: float = 3.0,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(others, weights), N x (k-1) each: every vector's k-1 nearest other vectors and their DBA weights."""
    others_k = max(1, min(k, len(database)) - 1)
    scores, neighbours = knn(database, database, others_k + 1)
    # A vector is its own nearest neighbour (weight 1, added by the caller): drop it from the others. A row
    # where an exact duplicate pushed it out drops its last neighbour instead, so every row keeps k-1.
    is_self = neighbours == np.arange(len(database))[:, None]
    is_self[~is_self.any(1), -1] = True
    others = neighbours[~is_self].reshape(len(database), others_k)
    sims = scores[~is_self].reshape(len(database), others_k)
    return others, dba_weights(others_k + 1, scheme, sims, alpha).astype(np.float32)


def database_augmentation(database: np.ndarray, k: int = 10, scheme: str = "alpha", alpha: float = 3.0,
                          in_place: bool = False, spill_dir: str | Path | None = None,
                          chunk: int | None = None) -> np.ndarray:
    """Every database vector replaced by the weighted sum of ``k`` vectors: itself and its k-1 nearest others.

    ``in_place``: the result overwrites ``database`` (float32 or float16) and is returned, with no second
    copy in memory: augmented rows go to a spill file in ``spill_dir`` (the system's temporary folder by
    default) a chunk at a time, because every later row still needs the original vectors, and are read
    back once all are written (``chunk`` rows at a time; by default 64 MiB of float32). Otherwise a new
    float32 array.
    """
    others, weights = dba_neighbours(database, k, scheme, alpha)
    if not in_place:
        return _weighted_sum(database, database, others, weights)
    chunk = chunk or max(1, (64 * 2**20) // (4 * database.shape[1]))
    with tempfile.TemporaryFile(dir=spill_dir, prefix="dba-") as spill:
        for start in range(0, len(database), chunk):
            rows = slice(start, start + chunk)
            augmented = _weighted_sum(database[rows], database, others[rows], weights[rows])
            spill.write(augmented.astype(database.dtype, copy=False).tobytes())
        spill.seek(0)
        for start in range(0, len(database), chunk):
            target = memoryview(database[start:start + chunk]).cast("B")
            if spill.readinto(target) != target.nbytes:
                raise OSError(f"DBA spill file in {spill_dir or tempfile.gettempdir()} came back short")
    return database


def diffusion_neighbours(n: int) -> int:
    """The graph's k when ``infer.diffusion.k`` is null: n / 250 within [5, 50].

    k=50 was set for Oxford/Paris with 100k distractors; on a small index it links every image to
    dozens of other landmarks and the diffusion smears them together (on the 2,568-image toy index,
    k=50 lost to no diffusion at all). 5 on a few hundred images, 10 on the toy, 50 from 12,500 up.
    """
    return int(np.clip(round(n / 250), 5, 50))


def diffusion(queries: np.ndarray, database: np.ndarray, k: int = 50, kq: int = 10, gamma: float = 3.0,
              alpha: float = 0.99, iterations: int = 20, topk: int = 100,
              chunk: int = 256, search=knn) -> tuple[np.ndarray, np.ndarray]:
    """Iscen et al. 2017: rank by the solution of (I - alpha S) f = y on a mutual kNN graph of the database.

    S = D^-1/2 A D^-1/2 with a_ij = max(0, sim)^gamma over mutual k-NN pairs; y is non-zero only on a
    query's kq nearest database items (sim^gamma). Solved by conjugate gradient for a chunk of queries
    at once, so memory is database x chunk.
    """
    n = len(database)
    system = _system(affinity_graph(database, k, gamma, search), alpha)
    q_sims, q_nbrs = search(queries, database, min(kq, n))
    out_scores = np.empty((len(queries), min(topk, n)), np.float32)
    out_ids = np.empty((len(queries), min(topk, n)), np.int64)
    for start in range(0, len(queries), chunk):
        stop = min(start + chunk, len(queries))
        y = np.zeros((n, stop - start))
        cols = np.repeat(np.arange(stop - start), q_nbrs.shape[1])
        y[q_nbrs[start:stop].ravel(), cols] = np.clip(q_sims[start:stop].ravel(), 0, None) ** gamma
        f = _conjugate_gradient(system, y, iterations)
        top = np.argsort(-f, axis=0)[: out_ids.shape[1]].T
        out_ids[start:stop] = top
        out_scores[start:stop] = np.take_along_axis(f.T, top, 1)
    return out_scores, out_ids


def affinity_graph(database: np.ndarray, k: int, gamma: float, search=None) -> sp.csr_matrix:
    """The database's mutual k-NN graph, a_ij = max(0, sim)^gamma: the offline part of diffusion."""
    n = len(database)
    k = min(k, n - 1) if n > 1 else 1
    sims, nbrs = (search or knn)(database, database, k + 1)
    rows = np.repeat(np.arange(n), nbrs.shape[1])
    graph = sp.csr_matrix((np.clip(sims.ravel(), 0, None) ** gamma, (rows, nbrs.ravel())), shape=(n, n))
    graph.setdiag(0)
    graph = graph.minimum(graph.T)  # mutual neighbours only
    graph.eliminate_zeros()
    return graph


def _system(graph: sp.csr_matrix, alpha: float) -> sp.csr_matrix:
    """I - alpha D^-1/2 A D^-1/2."""
    degree = np.asarray(graph.sum(1)).ravel()
    inv_sqrt = sp.diags(1.0 / np.sqrt(np.maximum(degree, 1e-12)))
    return (sp.eye(graph.shape[0]) - alpha * (inv_sqrt @ graph @ inv_sqrt)).tocsr()


def truncated_diffusion(queries: np.ndarray, database: np.ndarray, m: int = 1000, k: int = 50, kq: int = 10,
                        gamma: float = 3.0, alpha: float = 0.99, iterations: int = 20,
                        topk: int = 100, graph: sp.csr_matrix | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Diffusion restricted to each query's top-``m`` database items (Iscen et al.'s truncation).

    The database's global mutual k-NN graph (``graph``, built once here when not given) is cut to each
    query's top ``m`` items and the system solved on that subgraph only, so the cost per query is set by
    ``m``: the variant for GLDv2-sized indexes. Cutting the global graph keeps each item's neighbours as the
    whole database defines them (a graph rebuilt inside the top ``m`` would link items that are not each
    other's neighbours at all). Items outside the top ``m`` keep their order after the diffused ones.
    """
    m = min(m, len(database))
    graph = affinity_graph(database, k, gamma) if graph is None else graph
    q_sims, candidates = knn(queries, database, m)  # one search for all queries; each cut is then solved alone
    out_scores = np.empty((len(queries), min(topk, m)), np.float32)
    out_ids = np.empty((len(queries), min(topk, m)), np.int64)
    for q, ids in enumerate(candidates):
        keep = ids >= 0
        ids, sims = ids[keep], q_sims[q][keep]
        y = np.zeros((len(ids), 1))
        y[:kq, 0] = np.clip(sims[:kq], 0, None) ** gamma  # the candidates come nearest first
        f = _conjugate_gradient(_system(graph[ids][:, ids], alpha), y, iterations)[:, 0]
        local = np.argsort(-f, kind="stable")[: out_ids.shape[1]]
        width = len(local)
        out_ids[q, :width], out_scores[q, :width] = ids[local], f[local]
    return out_scores, out_ids


def _conjugate_gradient(matrix: sp.csr_matrix, rhs: np.ndarray, iterations: int) -> np.ndarray:
    """CG for a symmetric positive-definite ``matrix`` and many right-hand sides (columns) at once."""
    x = np.zeros_like(rhs)
    r = rhs - matrix @ x
    p = r.copy()
    rs = (r * r).sum(0)
    for _ in range(iterations):
        ap = matrix @ p
        step = rs / np.maximum((p * ap).sum(0), 1e-20)
        x += p * step
        r -= ap * step
        rs_new = (r * r).sum(0)
        if np.all(rs_new < 1e-12):
            break
        p = r + p * (rs_new / np.maximum(rs, 1e-20))
        rs = rs_new
    return x


def superglobal_rerank(queries: np.ndarray, database: np.ndarray, neighbours: np.ndarray, m: int = 400,
                       k: int = 9, beta: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """SuperGlobal's re-ranking of each query's top ``m`` (``neighbours``: Q x >= m, best first), as the
    authors' MDescAug and RerankwMDA compute it (Shao et al. 2023):

    - each top-m item becomes the weighted average of its k+1 nearest items within the top m: the nearest
      (itself) with weight 1, the others with beta * similarity; sum(w x) / sum(w), not normalised;
    - s1 = q . refined, with the original query (not a QE-expanded one);
    - the expanded query is the element-wise max of the k+1 refined items with the best s1, not normalised;
    - the final score is (s1 + expanded . refined) / 2. Returns (scores, ids), Q x m, best first.
    """
    m = min(m, neighbours.shape[1])
    ids = neighbours[:, :m]
    scores = np.empty(ids.shape, np.float32)
    order = np.empty(ids.shape, np.int64)
    near_k = min(k + 1, m)  # "including oneself"
    for q in range(len(queries)):
        items = database[ids[q]].astype(np.float64)
        sims = items @ items.T
        near = np.argsort(-sims, axis=1, kind="stable")[:, :near_k]
        weights = beta * np.take_along_axis(sims, near, 1)
        weights[:, 0] = 1.0
        refined = np.einsum("mk,mkd->md", weights, items[near]) / weights.sum(1, keepdims=True)
        s1 = refined @ queries[q].astype(np.float64)
        best = np.argsort(-s1, kind="stable")[:near_k]
        expanded = refined[best].max(0)
        final = (s1 + refined @ expanded) / 2
        rank = np.argsort(-final, kind="stable")
        order[q], scores[q] = ids[q][rank], final[rank]
    return scores, order


VOTES = ("similarity", "yokoo")


def vote_labels(descriptors: np.ndarray, train: np.ndarray, train_labels: np.ndarray,
                k: int = 3, vote: str = "similarity") -> tuple[np.ndarray, np.ndarray]:
    """Label each row by the summed votes of its top-k train neighbours: (labels, confidence). A neighbour's
    vote is its cosine similarity s, or with ``yokoo`` 1 - |a - b|^2 = 2s - 1 (what the GLR 2019 winners'
    code sums: a far neighbour votes against its label)."""
    if vote not in VOTES:
        raise ValueError(f"label vote '{vote}' is not one of {VOTES}")
    sims, nbrs = knn(descriptors, train, k)
    if vote == "yokoo":
        sims = 2.0 * sims - 1.0
    labels = np.empty(len(descriptors), dtype=train_labels.dtype)
    confidence = np.empty(len(descriptors), np.float32)
    for i, (row_s, row_n) in enumerate(zip(sims, nbrs)):
        votes: dict = {}
        for s, j in zip(row_s, row_n):
            votes[train_labels[j]] = votes.get(train_labels[j], 0.0) + float(s)
        labels[i], confidence[i] = max(votes.items(), key=lambda item: item[1])
    return labels, confidence


GATES = ("both", "insert")


def label_rerank(neighbours: np.ndarray, query_labels: np.ndarray, index_labels: np.ndarray,
                 index_conf: np.ndarray, topk: int = 100,
                 insert_threshold: float = np.inf, query_conf: np.ndarray | None = None,
                 min_confidence: float = 0.0, gate: str = "both") -> np.ndarray:
    """GLR19 1st place (Yokoo et al.). Sort step: index items sharing the query's label move to the front of
    the top-k, order kept. Insert step: same-label index items outside the list whose confidence exceeds
    ``insert_threshold`` are inserted after them (most confident first).

    A query whose own label vote is below ``min_confidence`` is gated: with ``gate=both`` it keeps its list
    (a landmark that train never shows still gets the nearest train label, and promoting that label's index
    images would bury it); with ``gate=insert``, as in the winners' code, it is still sorted and only the
    insertion is skipped.
    """
    if gate not in GATES:
        raise ValueError(f"label gate '{gate}' is not one of {GATES}")
    out = np.empty((len(neighbours), min(topk, neighbours.shape[1])), np.int64)
    for q, row in enumerate(neighbours):
        row = row[row >= 0][:topk]
        confident = query_conf is None or query_conf[q] >= min_confidence
        if not confident and gate == "both":
            out[q] = np.pad(row, (0, out.shape[1] - len(row)), constant_values=-1)
            continue
        same = index_labels[row] == query_labels[q]
        front = row[same]
        listed = set(row.tolist())
        extra = np.flatnonzero((index_labels == query_labels[q]) & (index_conf > insert_threshold)) if confident \
            else np.zeros(0, np.int64)
        extra = [int(j) for j in extra[np.argsort(-index_conf[extra], kind="stable")] if int(j) not in listed]
        merged = np.concatenate([front, np.asarray(extra, np.int64), row[~same]])[: out.shape[1]]
        out[q] = np.pad(merged, (0, out.shape[1] - len(merged)), constant_values=-1)
    return out
