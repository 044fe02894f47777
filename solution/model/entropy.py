"""Entropy-guided region weights: the KL divergence of matching vs non-matching distances.

For each (layer, region), the Euclidean distances between the region vectors of
image pairs of the same landmark (matching) and of different landmarks
(non-matching) are histogrammed over [0, 2] with additive smoothing; the KL
divergence KL(p_match || p_non) measures how well that region separates the
two. The weights are the KL values scaled to mean 1 (``remap.md``).
"""

from __future__ import annotations

import numpy as np


def sample_pairs(labels: np.ndarray, n_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(matching P x 2, non-matching P x 2) index pairs; matching pairs are distinct images of one label."""
    by_label = {lab: np.flatnonzero(labels == lab) for lab in np.unique(labels)}
    groups = [idx for idx in by_label.values() if len(idx) >= 2]
    if not groups:
        raise ValueError("KL estimation needs at least one landmark with two images")
    sizes = np.array([len(g) * (len(g) - 1) for g in groups], dtype=float)
    picks = rng.choice(len(groups), n_pairs, p=sizes / sizes.sum())
    matching = np.array([rng.choice(groups[g], 2, replace=False) for g in picks])
    first = rng.integers(0, len(labels), n_pairs * 2)
    second = rng.integers(0, len(labels), n_pairs * 2)
    keep = labels[first] != labels[second]
    non_matching = np.stack([first[keep], second[keep]], axis=1)[:n_pairs]
    return matching, non_matching


def kl_divergence(match: np.ndarray, non_match: np.ndarray, bins: int = 40, smoothing: float = 1e-3) -> np.ndarray:
    """KL(p_match || p_non) per column: ``match`` is P x K distances, ``non_match`` Q x K."""
    edges = np.linspace(0.0, 2.0, bins + 1)
    out = np.empty(match.shape[1])
    for k in range(match.shape[1]):
        p = np.histogram(np.clip(match[:, k], 0, 2), edges)[0] + smoothing * len(match)
        q = np.histogram(np.clip(non_match[:, k], 0, 2), edges)[0] + smoothing * len(non_match)
        p, q = p / p.sum(), q / q.sum()
        out[k] = float(np.sum(p * np.log(p / q)))
    return out


def region_kl(region_vectors: list[np.ndarray], labels: np.ndarray, n_pairs: int, rng: np.random.Generator,
              bins: int = 40, smoothing: float = 1e-3) -> np.ndarray:
    """L x R KL values from per-layer N x R x C L2-normalised region vectors."""
    matching, non_matching = sample_pairs(labels, n_pairs, rng)
    rows = []
    for vectors in region_vectors:
        d_match = np.linalg.norm(vectors[matching[:, 0]] - vectors[matching[:, 1]], axis=-1)
        d_non = np.linalg.norm(vectors[non_matching[:, 0]] - vectors[non_matching[:, 1]], axis=-1)
        rows.append(kl_divergence(d_match, d_non, bins, smoothing))
    return np.stack(rows)


def kl_to_weights(kl: np.ndarray, uniform_mix: float = 0.0) -> np.ndarray:
    """Non-negative weights with mean 1: KL scaled to mean 1, blended with uniform weights by ``uniform_mix``
    (0 is the paper's initialisation; 0.5 keeps the KL order while lifting the weakest regions to at least
    0.5, where a softplus weight still trains at a useful rate)."""
    if not 0.0 <= uniform_mix <= 1.0:
        raise ValueError(f"model.kl.uniform_mix={uniform_mix} must lie in [0, 1]")
    kl = np.maximum(kl, 0.0)
    mean = kl.mean()
    scaled = kl / mean if mean > 0 else np.ones_like(kl)
    return (1.0 - uniform_mix) * scaled + uniform_mix
