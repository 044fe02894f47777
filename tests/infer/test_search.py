import numpy as np

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


def test_index_vectors_is_a_view_of_the_flat_index():
    from solution.infer.search import build_index, index_vectors

    db = np.random.default_rng(1).normal(size=(20, 8)).astype(np.float32)
    assert np.array_equal(index_vectors(build_index(db, use_gpu=False)), db)
