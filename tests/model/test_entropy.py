import numpy as np
import pytest

from solution.model.entropy import kl_divergence, kl_to_weights, region_kl, sample_pairs


def test_kl_zero_for_same_and_grows_with_separation():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.5, 1.5, (2000, 1))
    same = kl_divergence(a, rng.uniform(0.5, 1.5, (2000, 1)))[0]
    apart = kl_divergence(rng.uniform(0.1, 0.6, (2000, 1)), rng.uniform(1.0, 1.5, (2000, 1)))[0]
    assert same < 0.05 and apart > 1.0


def test_sample_pairs():
    labels = np.array([0, 0, 1, 1, 1, 2])
    matching, non = sample_pairs(labels, 50, np.random.default_rng(0))
    assert len(matching) == 50 and len(non) == 50
    assert (labels[matching[:, 0]] == labels[matching[:, 1]]).all() and (matching[:, 0] != matching[:, 1]).all()
    assert (labels[non[:, 0]] != labels[non[:, 1]]).all()
    with pytest.raises(ValueError, match="two images"):
        sample_pairs(np.array([0, 1, 2]), 5, np.random.default_rng(0))


def test_informative_region_gets_the_larger_weight():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(40), 5)
    prototypes = rng.normal(size=(40, 16))
    informative = prototypes[labels] + 0.2 * rng.normal(size=(200, 16))  # region 0: the landmark shows
    noise = rng.normal(size=(200, 16))                                     # region 1: clutter
    vectors = np.stack([informative, noise], axis=1)
    vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True)
    kl = region_kl([vectors], labels, 1000, rng)
    assert kl.shape == (1, 2) and kl[0, 0] > 5 * kl[0, 1]
    weights = kl_to_weights(kl)
    assert weights.mean() == pytest.approx(1.0) and (weights >= 0).all()


def test_uniform_mix_keeps_the_kl_order_and_mean_and_lifts_the_weakest():
    kl = np.array([[0.01, 0.5, 1.0], [0.02, 0.2, 2.0]])
    paper, mixed = kl_to_weights(kl), kl_to_weights(kl, 0.5)
    assert mixed.mean() == pytest.approx(1.0) and mixed.min() >= 0.5 > paper.min()
    assert (np.argsort(mixed, axis=None) == np.argsort(paper, axis=None)).all()
    assert np.allclose(kl_to_weights(kl, 1.0), 1.0)
    with pytest.raises(ValueError, match="uniform_mix"):
        kl_to_weights(kl, 1.5)
