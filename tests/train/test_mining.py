import numpy as np

from solution.train.mining import random_negatives, select_negatives


def _unit(x):
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_hardest_first_one_per_landmark_never_own_landmark():
    query = _unit([[1, 0, 0]])
    pool = _unit([[1, 0.05, 0], [1, 0.1, 0], [1, 0.2, 0], [1, 0.5, 0], [0, 1, 0], [-1, 0, 0]])
    pool_labels = np.array([7, 1, 1, 2, 3, 4])  # nearest is the query's own landmark 7
    chosen = select_negatives(query, np.array([7]), pool, pool_labels, neg_num=3)
    assert chosen.tolist() == [[1, 3, 4]]  # 0 is a positive, 2 repeats landmark 1


def test_short_rows_padded():
    chosen = select_negatives(_unit([[1, 0]]), np.array([1]), _unit([[1, 0.1], [0, 1]]), np.array([1, 2]), 2)
    assert chosen.tolist() == [[1, -1]]


def test_random_negatives_distinct_landmarks():
    labels = np.array([0, 0, 1, 1, 2, 3, 4])
    chosen = random_negatives(np.array([0, 1]), labels, 3, np.random.default_rng(0))
    for q, row in zip([0, 1], chosen):
        assert len({labels[j] for j in row}) == 3 and q not in {labels[j] for j in row}


def test_a_query_whose_candidates_are_all_its_own_landmark_is_searched_deeper():
    """The nearest 40 pool images are the query's own landmark: the default 23 candidates hold no negative.
    They used to leave the row at -1 (the query was dropped from the epoch)."""
    rng = np.random.default_rng(0)
    own = _unit(np.c_[np.ones(40), rng.normal(0, 0.01, (40, 2))])
    others = _unit(np.c_[np.ones(12), rng.normal(0, 0.5, (12, 2))])
    pool = np.vstack([own, others])
    labels = np.r_[np.zeros(40, int), np.arange(1, 13)]
    chosen = select_negatives(_unit([[1, 0, 0]]), np.array([0]), pool, labels, neg_num=3)
    assert (chosen >= 40).all() and len(set(labels[chosen[0]])) == 3
