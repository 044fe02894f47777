import numpy as np
import pytest

from solution.config import ConfigError
from solution.model.whitening import fit_pca_whitening


def test_whitened_training_data_is_white_and_centred():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6)) + 3.0
    weight, bias = fit_pca_whitening(x, 4)
    y = x @ weight.numpy().T + bias.numpy()
    assert np.allclose(y.mean(0), 0, atol=1e-4)
    cov = np.cov(y.T)
    assert np.allclose(cov / cov[0, 0], np.eye(4), atol=1e-3)  # identity up to one global scale


def test_shrinkage_damps_small_directions_and_bad_dim():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3)) * [10.0, 1.0, 0.1]
    plain, _ = fit_pca_whitening(x, 3, 0.0)
    shrunk, _ = fit_pca_whitening(x, 3, 1.0)
    ratio = lambda w: np.linalg.norm(w[2]) / np.linalg.norm(w[0])  # noqa: E731
    assert ratio(shrunk.numpy()) < ratio(plain.numpy())
    with pytest.raises(ConfigError, match="at most 3"):
        fit_pca_whitening(x, 5)


def test_dimension_is_bounded_by_the_rank_of_centred_data():
    """n samples centred span n-1 directions: asking for n used to give a row of norm ~1e15."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 20))
    with pytest.raises(ConfigError, match="at most 7"):
        fit_pca_whitening(x, 8, 0.0)
    weight, bias = fit_pca_whitening(x, 7, 0.0)
    assert np.isfinite(weight.numpy()).all() and np.linalg.norm(weight.numpy(), axis=1).max() < 1e3
