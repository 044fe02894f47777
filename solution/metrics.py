"""Retrieval metrics, exact to their reference implementations.

- :func:`map_at_k`: Kaggle's mAP@100 (DELF ``metrics.py``): a duplicate keeps its
  rank, the denominator is min(m, k), a missing prediction scores 0.
- :func:`revisitop_map`: Revisited Oxford/Paris mAP with junk removal and
  trapezoidal AP, for the Easy/Medium/Hard protocols.
- :func:`global_average_precision`: GAP (micro-AP) for recognition.
- :func:`bootstrap_interval` and :func:`paired_bootstrap`: percentile intervals over queries, so that a
  difference between two configurations is reported with its noise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def average_precision_at_k(predicted: Sequence[str], relevant: set[str], k: int = 100) -> float:
    """AP@k of one query; ``predicted`` is best first. Duplicates count once but keep their position."""
    if not relevant:
        raise ValueError("average precision needs at least one relevant item")
    seen: set[str] = set()
    hits, total = 0, 0.0
    for rank, item in enumerate(predicted[:k], start=1):
        if item in seen:
            continue
        seen.add(item)
        if item in relevant:
            hits += 1
            total += hits / rank
    return total / min(len(relevant), k)


def query_aps(predictions: Mapping[str, Sequence[str]], solution: Mapping[str, Sequence[str]],
              k: int = 100) -> dict[str, float]:
    """AP@k of every query of ``solution``, in its order; their mean is :func:`map_at_k`."""
    return {q: average_precision_at_k(predictions.get(q, ()), set(rel), k) for q, rel in solution.items()}


def map_at_k(predictions: Mapping[str, Sequence[str]], solution: Mapping[str, Sequence[str]], k: int = 100) -> float:
    """mAP@k over the queries of ``solution`` (those with relevant items); unpredicted queries score 0."""
    if not solution:
        raise ValueError("the solution holds no scored query")
    total = sum(average_precision_at_k(predictions.get(q, ()), set(rel), k) for q, rel in solution.items())
    return total / len(solution)


def split_solution(solution: Mapping[str, tuple[list[str], str]]) -> dict[str, dict[str, list[str]]]:
    """{'Public': {...}, 'Private': {...}, 'all': {...}}; Ignored rows and queries without relevant images drop out."""
    parts: dict[str, dict[str, list[str]]] = {"Public": {}, "Private": {}, "all": {}}
    for query, (relevant, usage) in solution.items():
        if usage == "Ignored" or not relevant:
            continue
        parts[usage][query] = relevant
        parts["all"][query] = relevant
    return parts


def score_submission(predictions: Mapping[str, Sequence[str]], solution: Mapping[str, tuple[list[str], str]],
                     k: int = 100) -> dict[str, float]:
    """mAP@k for Public, Private and all, scored separately; a part without queries is left out."""
    return {name: map_at_k(predictions, part, k) for name, part in split_solution(solution).items() if part}


def score_with_intervals(predictions: Mapping[str, Sequence[str]], solution: Mapping[str, tuple[list[str], str]],
                         k: int = 100, resamples: int = 10_000, seed: int = 0) -> dict[str, dict]:
    """Per part: mAP@k, its 95% bootstrap interval over queries, the query count and the per-query APs."""
    out = {}
    for name, part in split_solution(solution).items():
        if part:
            aps = query_aps(predictions, part, k)
            values = np.fromiter(aps.values(), float, len(aps))
            out[name] = {"map": float(values.mean()), "ci": bootstrap_interval(values, resamples, seed=seed),
                         "queries": len(aps), "aps": aps}
    return out


def _resampled_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 1000):  # chunks bound the index matrix to 1000 x n
        picks = rng.integers(0, len(values), (min(1000, resamples - start), len(values)))
        means[start:start + len(picks)] = values[picks].mean(axis=1)
    return means


def bootstrap_interval(values: Sequence[float] | np.ndarray, resamples: int = 10_000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean: queries resampled with replacement ``resamples`` times."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("a bootstrap interval needs at least one value")
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(_resampled_means(values, resamples, seed), [tail, 100 - tail], method="inverted_cdf")
    return float(low), float(high)


def paired_bootstrap(a: Mapping[str, float], b: Mapping[str, float], resamples: int = 10_000, level: float = 0.95,
                     seed: int = 0) -> dict[str, float]:
    """Mean of a - b over the same queries, with its percentile bootstrap interval (queries resampled in pairs)."""
    if set(a) != set(b):
        raise ValueError("a paired bootstrap needs the same queries on both sides")
    diff = np.array([a[q] - b[q] for q in a], dtype=float)
    low, high = bootstrap_interval(diff, resamples, level, seed)
    return {"diff": float(diff.mean()), "low": low, "high": high, "queries": len(diff),
            "excludes_zero": bool(low > 0 or high < 0)}


def hierarchical_bootstrap(a: Sequence[Mapping[str, float]], b: Sequence[Mapping[str, float]] | None = None,
                           resamples: int = 10_000, level: float = 0.95, seed: int = 0) -> dict:
    """Mean AP over training seeds and queries (of ``a``, or of ``a`` minus ``b``) with an interval that holds
    both sources of variance: each resample draws seeds with replacement (for ``a`` and ``b`` apart: their runs
    are independent), then queries with replacement (the same draw on both sides: they are paired by query).

    ``a`` and ``b`` are lists over seeds of {query: AP} on the same queries. With one seed per side this is
    the query bootstrap (:func:`bootstrap_interval`, or :func:`paired_bootstrap` for a difference)."""
    sides = [a] if b is None else [a, b]
    if any(not side for side in sides):
        raise ValueError("a hierarchical bootstrap needs at least one seed on each side")
    queries = list(a[0])
    if any(set(run) != set(queries) for side in sides for run in side):
        raise ValueError("a hierarchical bootstrap needs the same queries in every run")
    tables = [np.array([[run[q] for q in queries] for run in side], dtype=float) for side in sides]
    rng = np.random.default_rng(seed)
    values = np.empty(resamples)
    for start in range(0, resamples, 500):
        n = min(500, resamples - start)
        picks = rng.integers(0, len(queries), (n, len(queries)))
        total = np.zeros(n)
        for sign, table in zip((1.0, -1.0), tables):
            per_query = table[rng.integers(0, len(table), (n, len(table)))].mean(axis=1)  # (n, queries)
            total += sign * np.take_along_axis(per_query, picks, axis=1).mean(axis=1)
        values[start:start + n] = total
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail], method="inverted_cdf")
    mean = float(tables[0].mean() - (tables[1].mean() if b is not None else 0.0))
    return {"mean": mean, "low": float(low), "high": float(high), "queries": len(queries),
            "seeds": [len(t) for t in tables], "per_seed": [round(float(m), 4) for m in tables[0].mean(axis=1)],
            "excludes_zero": bool(low > 0 or high < 0)}


def cluster_bootstrap(a: Mapping[str, float], clusters: Mapping[str, str], b: Mapping[str, float] | None = None,
                      resamples: int = 10_000, level: float = 0.95, seed: int = 0) -> dict:
    """Mean AP over queries (of ``a``, or of ``a`` minus ``b`` paired by query) with an interval that resamples
    whole clusters (e.g. the source photograph of each query view), not single queries: views of one
    photograph rise and fall together, and a query bootstrap would count them as independent evidence."""
    if b is not None and set(a) != set(b):
        raise ValueError("a paired cluster bootstrap needs the same queries on both sides")
    if set(a) - set(clusters):
        raise ValueError("every query needs a cluster")
    values = {q: a[q] - (b[q] if b is not None else 0.0) for q in a}
    names = sorted({clusters[q] for q in a})
    if not names:
        raise ValueError("a cluster bootstrap needs at least one query")
    sums = np.array([sum(v for q, v in values.items() if clusters[q] == c) for c in names])
    counts = np.array([sum(1 for q in values if clusters[q] == c) for c in names], dtype=float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(names), (resamples, len(names)))
    means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)  # a resample's mean over all its queries
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail], method="inverted_cdf")
    return {"mean": float(sums.sum() / counts.sum()), "low": float(low), "high": float(high),
            "queries": len(values), "clusters": len(names), "excludes_zero": bool(low > 0 or high < 0)}


def rounded(value, digits: int = 4):
    """Floats rounded to ``digits`` (through dicts, lists and tuples; lists come back as lists), for
    result files: a figure's noise is at the third decimal, so more digits only add churn."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def format_gain(stats: dict) -> str:
    """A paired difference (``diff``, ``low``, ``high``, ``excludes_zero``) as ``+0.01 [-0.01, +0.03] (tie)``:
    marked a tie when its interval contains 0."""
    return (format_interval(stats["diff"], (stats["low"], stats["high"]), signed=True)
            + ("" if stats["excludes_zero"] else " (tie)"))


def format_interval(mean: float, ci: Sequence[float], signed: bool = False) -> str:
    """``0.5450 [0.4912, 0.5981]``, or with signs for differences."""
    f = "{:+.4f}" if signed else "{:.4f}"
    return f"{f.format(mean)} [{f.format(ci[0])}, {f.format(ci[1])}]"


def trapezoid_ap(ranks: np.ndarray, n_positives: int) -> float:
    """AP with trapezoidal interpolation from the 0-based ranks of the positives (revisitop ``compute_ap``)."""
    ap = 0.0
    recall_step = 1.0 / n_positives
    for i, rank in enumerate(np.sort(ranks)):
        precision_before = i / rank if rank > 0 else 1.0
        precision_after = (i + 1) / (rank + 1)
        ap += (precision_before + precision_after) * recall_step / 2.0
    return ap


def revisitop_ap(ranking: Sequence[int], positives: Sequence[int], junk: Sequence[int]) -> float:
    """AP of one query: junk is removed from ``ranking`` (database indices, best first) before ranking positives."""
    positives, junk = set(positives), set(junk)
    kept = [item for item in ranking if item not in junk]
    ranks = np.array([r for r, item in enumerate(kept) if item in positives], dtype=float)
    return trapezoid_ap(ranks, len(positives))


PROTOCOLS = {
    "easy": (("easy",), ("junk", "hard")),
    "medium": (("easy", "hard"), ("junk",)),
    "hard": (("hard",), ("junk", "easy")),
}


def revisitop_map(rankings: Sequence[Sequence[int]], gnd: Sequence[Mapping[str, Sequence[int]]]) -> dict[str, float]:
    """mAP (in [0, 1]) for Easy, Medium and Hard; queries with no positive under a protocol are left out."""
    results = {}
    for name, (positive_keys, junk_keys) in PROTOCOLS.items():
        aps = []
        for ranking, entry in zip(rankings, gnd):
            positives = [i for key in positive_keys for i in entry.get(key, [])]
            if not positives:
                continue
            junk = [i for key in junk_keys for i in entry.get(key, [])]
            aps.append(revisitop_ap(ranking, positives, junk))
        results[name] = float(np.mean(aps)) if aps else float("nan")
    return results


def global_average_precision(predictions: Mapping[str, tuple[int, float]], truth: Mapping[str, int | None]) -> float:
    """GAP: predictions (label, confidence) sorted by confidence; divided by queries that have a true label."""
    n_true = sum(label is not None for label in truth.values())
    if n_true == 0:
        raise ValueError("GAP needs at least one query with a true label")
    ordered = sorted(predictions.items(), key=lambda item: -item[1][1])
    hits, total = 0, 0.0
    for rank, (query, (label, _)) in enumerate(ordered, start=1):
        if truth.get(query) is not None and truth[query] == label:
            hits += 1
            total += hits / rank
    return total / n_true
