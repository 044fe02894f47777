import numpy as np
import pytest

from solution.infer.rerank import (
    alpha_qe,
    database_augmentation,
    diffusion,
    label_rerank,
    superglobal_rerank,
    truncated_diffusion,
    vote_labels,
)


def _unit(rows):
    rows = np.asarray(rows, np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_alpha_qe_hand_computed():
    q = _unit([[1, 0]])
    db = _unit([[1, 1], [0, 1]])
    s = float(db[0] @ q[0])  # cos 45
    out = alpha_qe(q, db, np.array([[0, 1]]), np.array([[s, 0.0]]), alpha=3.0, n=2)
    expected = q[0] + s**3 * db[0]
    assert np.allclose(out[0], expected / np.linalg.norm(expected), atol=1e-6)
    average = alpha_qe(q, db, np.array([[0, 1]]), np.array([[s, 0.0]]), alpha=0.0, n=2)
    assert np.allclose(average[0], _unit([q[0] + db[0] + db[1]])[0], atol=1e-6)


def test_dba_hand_computed():
    db = _unit([[1, 0], [0.8, 0.6], [0, 1]])
    out = database_augmentation(db, k=2, scheme="alpha", alpha=1.0)  # itself and its nearest other
    # nearest other of 0 is 1 (sim 0.8); of 2 is 1 (sim 0.6)
    assert np.allclose(out[0], _unit([db[0] + 0.8 * db[1]])[0], atol=1e-6)
    assert np.allclose(out[2], _unit([db[2] + 0.6 * db[1]])[0], atol=1e-6)
    logspace = database_augmentation(db, k=2, scheme="logspace")
    assert np.allclose(logspace[0], _unit([db[0] + 10 ** -1.5 * db[1]])[0], atol=1e-6)


def test_dba_logspace_is_the_2018_entrys_ten_vectors_self_included():
    rng = np.random.default_rng(0)
    db = _unit(rng.normal(size=(30, 5)))
    out = database_augmentation(db, k=10, scheme="logspace")
    order = np.argsort(-(db @ db[0]))  # itself first, then its nine nearest others
    weights = np.logspace(0, -1.5, 10)
    assert order[0] == 0
    assert np.allclose(out[0], _unit([weights @ db[order[:10]]])[0], atol=1e-5)


def test_dba_in_place_overwrites_through_a_spill_file_and_equals_the_copying_dba(tmp_path):
    rng = np.random.default_rng(3)
    db = _unit(rng.normal(size=(700, 12)))
    expected = database_augmentation(db, k=4)
    assert not np.array_equal(expected, db)
    work = db.copy()
    out = database_augmentation(work, k=4, in_place=True, spill_dir=tmp_path, chunk=50)  # 14 chunks
    assert out is work and np.allclose(work, expected, atol=1e-6)  # later chunks saw the original rows
    assert list(tmp_path.iterdir()) == []  # the spill file is gone
    half = db.astype(np.float16)
    out = database_augmentation(half, k=4, in_place=True, spill_dir=tmp_path)
    assert out is half and out.dtype == np.float16
    off = np.abs(out - expected).max(1) > 1e-3  # float16 rounding may swap a near-tied neighbour, nothing more
    assert off.sum() <= 5


def test_diffusion_follows_the_manifold():
    # A chain of points along an arc, and one distractor close to the query but off the arc.
    angles = np.linspace(0, 1.2, 13)
    chain = np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)], 1)
    distractor = _unit([[0.9, -0.1, 0.6]])
    db = _unit(np.vstack([chain, distractor]))
    query = _unit([[1.0, 0.02, 0.0]])
    raw = np.argsort(-(db @ query[0]))
    assert list(raw).index(13) < list(raw).index(12)  # raw similarity puts the distractor above the far end
    _, ranked = diffusion(query, db, k=2, kq=2, gamma=1.0, alpha=0.99, iterations=50, topk=14)
    assert list(ranked[0]).index(13) > list(ranked[0]).index(12)


def test_superglobal_reproduces_the_official_formula_by_hand():
    """x0=(1,0), x1=(.8,.6), x2=(0,1), q=(1,0), K=1 (two items with itself), beta=0.5, worked by hand:
    refined0 = (x0 + .4 x1)/1.4 = (.942857, .171429); refined1 = (x1 + .4 x0)/1.4 = (.857143, .428571);
    refined2 = (x2 + .3 x1)/1.3 = (.184615, .907692); s1 = (.942857, .857143, .184615);
    expanded = max(refined0, refined1) = (.942857, .428571); s2 = (.962449, .991837, .563077);
    final = (s1 + s2)/2 = (.952653, .924490, .373846). An L2-normalised refinement or expansion gives
    other values (e.g. refined0 . q = .983916)."""
    db = np.array([[1, 0], [0.8, 0.6], [0, 1]], np.float32)
    q = np.array([[1, 0]], np.float32)
    scores, order = superglobal_rerank(q, db, np.array([[2, 1, 0]]), m=3, k=1, beta=0.5)
    assert order[0].tolist() == [0, 1, 2]
    assert np.allclose(scores[0], [0.952653, 0.924490, 0.373846], atol=1e-5)


def test_superglobal_promotes_the_consistent_item():
    q = _unit([[1, 0, 0]])
    db = _unit([[0.9, 0.44, 0], [0.9, 0.3, 0.3], [0.88, 0.33, 0.33], [0.86, 0.35, 0.36]])
    scores, order = superglobal_rerank(q, db, np.array([[0, 1, 2, 3]]), m=4, k=2, beta=0.15)
    assert sorted(order[0].tolist()) == [0, 1, 2, 3]
    assert order[0][0] != 0  # item 0 has the best raw score, but its neighbours disagree with it
    assert np.all(np.diff(scores[0]) <= 1e-7)


def test_vote_and_label_rerank():
    train = _unit([[1, 0], [0.9, 0.1], [0, 1]])
    labels, conf = vote_labels(_unit([[1, 0.05], [0.1, 1]]), train, np.array([7, 7, 9]), k=2)
    assert labels.tolist() == [7, 9] and conf[0] == pytest.approx(
        float(_unit([[1, 0.05]])[0] @ train[0] + _unit([[1, 0.05]])[0] @ train[1]), abs=1e-5)
    neighbours = np.array([[3, 0, 1, 2]])
    out = label_rerank(neighbours, np.array([5]), np.array([5, 8, 5, 8, 5]),
                       np.array([0.1, 0.1, 0.2, 0.1, 0.9]), topk=4, insert_threshold=0.5)
    # same label (0, 2) first in their order, then the confident unlisted 4, then the rest
    assert out[0].tolist() == [0, 2, 4, 3]
    # a query whose own label vote is weak (a landmark train never shows) keeps its list as it was
    kept = label_rerank(np.array([[3, 0, 1, 2], [3, 0, 1, 2]]), np.array([5, 5]), np.array([5, 8, 5, 8, 5]),
                        np.array([0.1, 0.1, 0.2, 0.1, 0.9]), topk=4, insert_threshold=0.5,
                        query_conf=np.array([0.4, 0.9]), min_confidence=0.5)
    assert kept.tolist() == [[3, 0, 1, 2], [0, 2, 4, 3]]


def test_yokoo_label_rerank_gates_only_the_insertion_and_votes_2s_minus_1():
    train = _unit([[1, 0], [0.9, 0.1], [0, 1]])
    query = _unit([[1, 0.05]])[0]
    labels, conf = vote_labels(query[None], train, np.array([7, 7, 9]), k=2, vote="yokoo")
    assert labels.tolist() == [7] and conf[0] == pytest.approx(float(2 * (query @ train[0]) - 1
                                                                     + 2 * (query @ train[1]) - 1), abs=1e-5)
    # two far 7s (similarity 0.4 each) outvote one 9 at 0.7 by similarity (0.8 to 0.7); with 2s - 1 a far
    # neighbour votes against its label (-0.4 to +0.4) and 9 wins
    votes = _unit([[0.4, 0.9165, 0], [0.4, 0, 0.9165], [0.7, 0.714, 0]])
    two_far = [vote_labels(_unit([[1, 0, 0]]), votes, np.array([7, 7, 9]), k=3, vote=v)[0].tolist()
               for v in ("similarity", "yokoo")]
    assert two_far == [[7], [9]]
    rows = np.array([[3, 0, 1, 2], [3, 0, 1, 2]])
    index_labels, index_conf = np.array([5, 8, 5, 8, 5]), np.array([0.1, 0.1, 0.2, 0.1, 0.9])
    yokoo = label_rerank(rows, np.array([5, 5]), index_labels, index_conf, topk=4, insert_threshold=0.0,
                         query_conf=np.array([0.4, 0.9]), min_confidence=0.5, gate="insert")
    # the unsure query is still sorted (0, 2 first), only the insertion of 4 is skipped; the sure one gets both
    assert yokoo.tolist() == [[0, 2, 3, 1], [0, 2, 4, 3]]
    with pytest.raises(ValueError, match="gate"):
        label_rerank(rows, np.array([5, 5]), index_labels, index_conf, gate="never")


def test_label_rerank_votes_the_query_with_its_own_descriptor_when_asked():
    from solution.config import load_config
    from solution.infer.retrieve import retrieve

    # train: landmark 1 along x, landmark 2 along y; the query sits near x, but QE pulls it towards y
    train = _unit([[1, 0, 0], [1, 0.1, 0], [0, 1, 0], [0.1, 1, 0]])
    index = _unit([[0.6, 0.8, 0], [0.55, 0.83, 0], [1, 0.05, 0.3]])
    query = _unit([[0.8, 0.6, 0]])
    infer = load_config("toy")["infer"]
    infer = {**infer, "topk": 3, "dba": {**infer["dba"], "enabled": False},
             "qe": {**infer["qe"], "enabled": True, "n": 2, "alpha": 0.0},
             "label_rerank": {**infer["label_rerank"], "enabled": True, "k": 1, "min_confidence": 0.0}}
    labels = np.array([1, 1, 2, 2])
    expanded = retrieve(query, index, infer, train, labels)[0]
    own = retrieve(query, index, {**infer, "label_rerank": {**infer["label_rerank"], "query": "own"}}, train,
                   labels)[0]
    assert expanded[0].tolist()[:2] == [0, 1]   # the expanded query leans to y: landmark 2's images first
    assert own[0].tolist()[0] == 2              # its own descriptor says landmark 1: image 2 goes first


def test_truncated_diffusion_matches_full_when_m_covers_the_database_and_stays_inside_top_m():
    rng = np.random.default_rng(0)
    db = _unit(rng.normal(size=(40, 6)))
    q = _unit(rng.normal(size=(3, 6)))
    full = diffusion(q, db, k=5, kq=3, gamma=1.0, iterations=30, topk=10)[1]
    truncated = truncated_diffusion(q, db, m=40, k=5, kq=3, gamma=1.0, iterations=30, topk=10)[1]
    assert (full == truncated).all()
    small = truncated_diffusion(q, db, m=12, k=5, kq=3, gamma=1.0, iterations=30, topk=10)[1]
    top12 = np.argsort(-(q @ db.T), axis=1)[:, :12]
    assert all(set(row) <= set(top) for row, top in zip(small, top12))


def test_truncated_diffusion_searches_the_index_once(monkeypatch):
    """One search builds the database's graph, one finds all queries' candidates; each cut is then solved
    alone (no search, no GPU round trip, per query)."""
    from solution.infer import rerank

    calls = []
    real = rerank.knn
    monkeypatch.setattr(rerank, "knn", lambda *a, **k: calls.append(len(a[0])) or real(*a, **k))
    rng = np.random.default_rng(1)
    db, q = _unit(rng.normal(size=(50, 6))), _unit(rng.normal(size=(7, 6)))
    rerank.truncated_diffusion(q, db, m=20, k=5, kq=3, gamma=1.0, iterations=10, topk=10)
    assert calls == [50, 7]


def test_truncated_diffusion_cuts_the_global_graph():
    """Items 0 and 1 are each other's nearest in the whole database, but the query's top 3 holds only 0, 2, 3:
    inside the cut, 0 keeps no edge to 2 or 3 (they are not its neighbours globally), where a graph rebuilt
    inside the top 3 would link them."""
    from solution.infer.rerank import affinity_graph

    db = _unit([[1, 0, 0], [0.99, 0.1, 0], [0.5, 0.86, 0], [0.45, 0.86, 0.2], [0, 0, 1]])
    graph = affinity_graph(db, k=1, gamma=1.0)
    assert graph[0, 1] > 0 and graph[0, 2] == 0 and graph[2, 3] > 0
    cut = graph[[0, 2, 3]][:, [0, 2, 3]]
    assert cut[0].nnz == 0 and cut[1, 2] > 0


def test_diffusion_neighbours_scale_with_the_index():
    from solution.infer.rerank import diffusion_neighbours

    assert [diffusion_neighbours(n) for n in (300, 2568, 5063, 12_500, 761_757)] == [5, 10, 20, 50, 50]
