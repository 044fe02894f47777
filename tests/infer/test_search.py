import numpy as np
import pytest

from solution.infer.search import knn


def test_knn_matches_brute_force_in_chunks():
    rng = np.random.default_rng(0)
    db = rng.normal(size=(50, 8)).astype(np.float32)
    q = rng.normal(size=(13, 8)).astype(np.float32)
    scores, idx = knn(q, db, 5, chunk=4)
    expected = np.argsort(-(q @ db.T), axis=1)[:, :5]
    assert (idx == expected).all()
    assert np.allclose(scores, np.take_along_axis(q @ db.T, expected, 1), atol=1e-5)
    assert knn(q, db[:3], 10)[1].shape == (13, 3)


def test_ivfpq_finds_true_neighbours_and_recall_is_measured():
    from solution.infer.search import build_index, recall_at_k, search

    rng = np.random.default_rng(0)
    db = rng.normal(size=(5000, 32)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    q = db[:200] + 0.05 * rng.normal(size=(200, 32)).astype(np.float32)  # each query's true match is db[i]
    exact = knn(q, db, 10)[1]
    approx = search(build_index(db, kind="ivfpq", nlist=32, m=8, nprobe=32), q, 10)[1]
    assert recall_at_k(exact, exact, 10) == 1.0
    assert recall_at_k(approx, exact, 1) > 0.8  # the nearest neighbour survives compression
    assert recall_at_k(approx, exact, 10) < 1.0  # and the approximation is visible in the measure


def test_exact_index_holds_the_database_without_copying_and_merges_blocks():
    from solution.infer.search import ExactIndex, search

    rng = np.random.default_rng(1)
    db = rng.normal(size=(1000, 16)).astype(np.float16)
    q = rng.normal(size=(37, 16)).astype(np.float32)
    index = ExactIndex(db, use_gpu=False, block=64)  # 16 blocks: the top-k crosses block borders
    assert index.vectors is db
    sims = q @ db.astype(np.float32).T
    scores, ids = search(index, q, 10, chunk=8)
    assert (ids == np.argsort(-sims, axis=1, kind="stable")[:, :10]).all()
    assert np.allclose(scores, np.take_along_axis(sims, ids, 1), atol=1e-4)
    assert search(ExactIndex(db[:5], use_gpu=False), q, 10)[1].shape == (37, 5)


def test_float16_queries_are_widened_a_chunk_at_a_time(monkeypatch):
    from solution.infer import search as module

    db = np.random.default_rng(2).normal(size=(300, 8)).astype(np.float16)
    widened = []
    real = module.as_float32
    monkeypatch.setattr(module, "as_float32", lambda rows: widened.append(len(rows)) or real(rows))
    module.knn(db, db, 3, chunk=100)
    assert max(widened) <= 300 and widened.count(100) >= 3  # never the 300 queries at once as float32


def test_exact_index_rejects_what_it_cannot_search():
    from solution.infer.search import ExactIndex

    with pytest.raises(ValueError, match="float32 or float16"):
        ExactIndex(np.zeros((4, 8), np.float64))
