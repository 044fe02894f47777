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


@pytest.mark.parametrize("order", ["shuffled", "ascending"])
def test_blocked_search_passes_only_scores_above_the_running_kth_and_stays_exact(order, monkeypatch):
    """A random order sends a few candidates per block through the filter; an ascending database (each block
    beating every earlier one) sends more than an eighth, where the plain top-k takes over. Both rank as a
    full sort does, from a first block smaller than k onwards."""
    import torch

    from solution.infer import search as module

    rng = np.random.default_rng(3)
    q = rng.normal(size=(1, 24)).astype(np.float32)
    db = rng.normal(size=(3000, 24)).astype(np.float32)
    if order == "ascending":
        db = db[np.argsort(db @ q[0])]  # query 0 sees each block beat all before it
    queries = q if order == "ascending" else rng.normal(size=(40, 24)).astype(np.float32)
    passed = []
    real = module._candidates_above

    def counted(*args):
        out = real(*args)
        passed.append(out is not None)
        return out

    monkeypatch.setattr(module, "_candidates_above", counted)
    scores, ids = module._blocked_top_k(queries, db, 30, block=20)
    sims = queries @ db.T
    assert (ids == np.argsort(-sims, axis=1, kind="stable")[:, :30]).all()
    assert np.allclose(scores, np.take_along_axis(sims, ids, 1), atol=1e-5)
    assert len(passed) == 3000 // 20 - 2  # the first two blocks (20 rows each) fill the top-30 unfiltered
    if order == "ascending":
        assert not any(passed)
    else:  # half of the third block can still enter; from a few hundred rows on, a few per query per block
        assert not passed[0] and all(passed[len(passed) // 4:])
    products = torch.zeros(2, 16)  # 3 of 32 pass: padded to the 2 of the first row, ids offset by 7
    products[:, :3] = torch.tensor([[0.5, 0.125, 0.75], [0.25, 0.375, 0.125]])
    above = real(products, torch.tensor([[0.4], [0.3]]), 7)
    assert above[0].tolist() == [[0.5, 0.75], [0.375, -float("inf")]]
    assert above[1][0].tolist() == [7, 9] and above[1][1, 0] == 8
    products[1, 3:8] = 1.0  # 8 of 32 pass: more than an eighth
    assert real(products, torch.tensor([[0.4], [0.3]]), 7) is None
