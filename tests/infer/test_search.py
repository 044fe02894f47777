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
