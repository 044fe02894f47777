"""The whole search chain: who owns the database, and what float16 storage changes."""

import copy

import numpy as np
import pytest

from solution.config import load_config
from solution.infer.retrieve import retrieve


def _data(n: int = 600, dim: int = 32, queries: int = 40):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((60, dim)).astype(np.float32)
    labels = rng.integers(0, 60, n)
    index = centres[labels] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    index /= np.linalg.norm(index, axis=1, keepdims=True)
    query = centres[labels[:queries]] + 0.6 * rng.standard_normal((queries, dim)).astype(np.float32)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    return query, index, labels


def _cfg(**index):
    cfg = copy.deepcopy(load_config("toy")["infer"])
    cfg["qe"].update(enabled=True, n=2)
    cfg["dba"].update(enabled=True, k=3)
    cfg["label_rerank"]["enabled"] = False  # these tests give no train descriptors
    cfg["index"].update(index)
    return cfg


def test_the_callers_index_is_kept_unless_handed_over():
    query, index, _ = _data()
    before = index.copy()
    kept, _ = retrieve(query, index, _cfg())
    assert np.array_equal(index, before)
    handed, _ = retrieve(query, index, _cfg(), in_place=True)
    assert not np.array_equal(index, before)  # DBA wrote over it, with no second copy
    assert np.array_equal(handed, kept)


def test_a_float16_index_ranks_as_float32_does():
    query, index, _ = _data()
    full, _ = retrieve(query, index, _cfg())
    half, _ = retrieve(query, index, _cfg(dtype="float16"))
    assert (full[:, 0] == half[:, 0]).mean() >= 0.95
    assert np.mean([len(set(a[:10]) & set(b[:10])) / 10 for a, b in zip(full, half)]) >= 0.9


def test_label_votes_see_the_index_before_dba_overwrites_it():
    query, index, labels = _data()
    cfg = _cfg()
    cfg["label_rerank"].update(enabled=True, k=3)
    train, train_labels = index[:300].copy(), labels[:300]
    kept, _ = retrieve(query, index, cfg, train, train_labels)
    handed, _ = retrieve(query, index.copy(), cfg, train, train_labels, in_place=True)
    assert np.array_equal(kept, handed)


def test_label_reranking_without_train_descriptors_is_refused_before_any_work():
    query, index, _ = _data()
    cfg = _cfg()
    cfg["label_rerank"]["enabled"] = True
    before = index.copy()
    with pytest.raises(ValueError, match="train descriptors"):
        retrieve(query, index, cfg, in_place=True)
    assert np.array_equal(index, before)


def test_neighbour_counts_beyond_the_index_are_said(caplog):
    """#29: dba.k, qe.n and diffusion.k beyond the index were cut without a word."""
    import numpy as np

    from solution.config import load_config
    from solution.infer.retrieve import retrieve

    rng = np.random.default_rng(0)
    index = rng.standard_normal((20, 8)).astype(np.float32)
    index /= np.linalg.norm(index, axis=1, keepdims=True)
    cfg = load_config("toy-tiny", ["infer.dba.enabled=true", "infer.dba.k=50", "infer.qe.enabled=true",
                                   "infer.qe.n=30", "infer.label_rerank.enabled=false"])["infer"]
    caplog.set_level("WARNING")
    retrieve(index[:3], index, cfg)
    assert "infer.dba.k=50 is more than the 19" in caplog.text and "infer.qe.n=30 is more than the 20" in caplog.text
