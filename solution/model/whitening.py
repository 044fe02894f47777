"""PCA-whitening fitted on training descriptors, as the initial value of the learned whitening layer."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.decomposition import PCA

from ..config import ConfigError


def fit_pca_whitening(descriptors: np.ndarray, dim: int, shrinkage: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight dim x D, bias dim) so that ``weight @ x + bias`` centres, projects and whitens ``x``.

    ``shrinkage`` is added to the eigenvalues (normalised to mean 1) before the
    inverse square root: 0 is plain whitening; larger values stop the many
    small-variance directions of a small training set from being amplified.
    """
    n, d = descriptors.shape
    most = min(n - 1, d)  # centred data spans at most n-1 directions; the rest have zero variance
    if dim > most:
        raise ConfigError(f"cannot fit {dim}-D whitening on {n} descriptors of {d} dimensions; "
                          f"lower model.whiten_dim to at most {most}, or describe more training images")
    pca = PCA(n_components=dim, svd_solver="full").fit(descriptors.astype(np.float64))
    variance = pca.explained_variance_ / pca.explained_variance_.mean()
    weight = pca.components_ / np.sqrt(variance + shrinkage)[:, None]
    bias = -weight @ pca.mean_
    return torch.from_numpy(weight).float(), torch.from_numpy(bias).float()
