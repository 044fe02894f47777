import math

import numpy as np
import pytest

from solution.metrics import (
    average_precision_at_k,
    bootstrap_interval,
    cluster_bootstrap,
    format_interval,
    global_average_precision,
    hierarchical_bootstrap,
    map_at_k,
    paired_bootstrap,
    revisitop_map,
    score_submission,
    score_with_intervals,
    trapezoid_ap,
)


def test_ap_hand_computed():
    # hits at ranks 1 and 3 of 2 relevant: (1/1 + 2/3) / 2
    assert average_precision_at_k(["a", "x", "b"], {"a", "b"}) == pytest.approx((1 + 2 / 3) / 2)


def test_duplicate_keeps_its_rank():
    # 'a' twice: the duplicate is skipped but occupies rank 2, so 'b' is at rank 3.
    assert average_precision_at_k(["a", "a", "b"], {"a", "b"}) == pytest.approx((1 + 2 / 3) / 2)


def test_denominator_is_min_m_k():
    # 3 relevant, 1 retrieved at rank 1: 1/3, not 1/1 (the common mistake)
    assert average_precision_at_k(["a"], {"a", "b", "c"}) == pytest.approx(1 / 3)
    relevant = {f"r{i}" for i in range(150)}
    assert average_precision_at_k([f"r{i}" for i in range(100)], relevant, k=100) == pytest.approx(1.0)


def test_only_top_k_count():
    assert average_precision_at_k(["x"] * 100 + ["a"], {"a"}, k=100) == 0.0


def test_missing_prediction_scores_zero():
    solution = {"q1": ["a"], "q2": ["b"]}
    assert map_at_k({"q1": ["a"]}, solution) == pytest.approx(0.5)


def test_ignored_rows_are_dropped_and_parts_scored_separately():
    solution = {
        "q1": (["a"], "Public"),
        "q2": (["b"], "Private"),
        "q3": ([], "Ignored"),
        "q4": (["c"], "Ignored"),
    }
    predictions = {"q1": ["a"], "q2": ["x", "b"], "q3": ["a"], "q4": ["z"]}
    scores = score_submission(predictions, solution)
    assert scores == pytest.approx({"Public": 1.0, "Private": 0.5, "all": 0.75})


def test_trapezoid_ap_matches_revisitop():
    # revisitop compute_ap for positives at ranks 0 and 2 (0-based):
    # j=0: (1 + 1/1)/2 * 1/2 = 0.5 ; j=1: (1/2 + 2/3)/2 * 1/2 = 0.291666
    assert trapezoid_ap(np.array([0.0, 2.0]), 2) == pytest.approx(0.5 + (0.5 + 2 / 3) / 4)


def test_revisitop_junk_removed_and_protocols():
    gnd = [{"easy": [0], "hard": [2], "junk": [1]}]
    ranking = [[1, 0, 3, 2]]  # junk first, then easy, a negative, then hard
    scores = revisitop_map(ranking, gnd)
    assert scores["easy"] == pytest.approx(1.0)  # junk (1) and hard (2) removed: easy at rank 0
    # medium: junk removed -> [0, 3, 2]; positives at 0 and 2
    assert scores["medium"] == pytest.approx(trapezoid_ap(np.array([0.0, 2.0]), 2))
    assert scores["hard"] == pytest.approx(trapezoid_ap(np.array([1.0]), 1))  # [3, 2] after removing 1 and 0


def test_revisitop_query_without_positive_left_out():
    scores = revisitop_map([[0], [0]], [{"easy": [0], "hard": [], "junk": []}, {"easy": [], "hard": [], "junk": []}])
    assert scores["easy"] == 1.0
    assert math.isnan(revisitop_map([[0]], [{"easy": [], "hard": [], "junk": []}])["hard"])


def test_gap_hand_computed():
    truth = {"a": 1, "b": 2, "c": None}
    predictions = {"a": (1, 0.9), "c": (5, 0.8), "b": (2, 0.1)}
    # sorted: a (hit, P=1), c (miss), b (hit, P=2/3); divided by the 2 labelled queries
    assert global_average_precision(predictions, truth) == pytest.approx((1 + 2 / 3) / 2)


def test_bootstrap_interval_hand_checked():
    # Resampling 4 values from {0, 1, 1, 1}: the number of zeros drawn is Binomial(4, 1/4), so
    # P(mean = 0) = 1/256 < 2.5% <= P(mean <= 0.25) = 13/256, and P(mean < 1) = 175/256 < 97.5%.
    assert bootstrap_interval([0, 1, 1, 1]) == (0.25, 1.0)
    assert bootstrap_interval([0.3] * 7) == (0.3, 0.3)
    values = np.random.default_rng(0).random(400)
    low, high = bootstrap_interval(values)
    half = 1.96 * values.std() / np.sqrt(len(values))  # the normal approximation, 0.029 here
    assert low == pytest.approx(values.mean() - half, abs=0.003)
    assert high == pytest.approx(values.mean() + half, abs=0.003)


def test_paired_bootstrap_pairs_queries():
    a = {"q1": 0.9, "q2": 0.5, "q3": 0.2, "q4": 0.7}
    shifted = {q: v - 0.1 for q, v in a.items()}
    same = paired_bootstrap(a, a)
    assert (same["diff"], same["low"], same["high"], same["excludes_zero"]) == (0.0, 0.0, 0.0, False)
    # A constant +0.1 per query is certain when paired, however spread the APs themselves are.
    gain = paired_bootstrap(a, shifted)
    assert gain["low"] == pytest.approx(0.1) and gain["high"] == pytest.approx(0.1) and gain["excludes_zero"]
    with pytest.raises(ValueError, match="same queries"):
        paired_bootstrap(a, {"q1": 0.0})


def test_score_with_intervals_matches_score_submission():
    solution = {"a": (["x"], "Public"), "b": (["y", "z"], "Private"), "c": ([], "Ignored")}
    predictions = {"a": ["x"], "b": ["z", "w"]}
    scored = score_with_intervals(predictions, solution)
    assert {k: v["map"] for k, v in scored.items()} == score_submission(predictions, solution)
    assert scored["all"]["aps"] == {"a": 1.0, "b": 0.5} and scored["all"]["queries"] == 2
    assert format_interval(0.5, (0.25, 0.75)) == "0.5000 [0.2500, 0.7500]"
    assert format_interval(0.02, (-0.01, 0.05), signed=True) == "+0.0200 [-0.0100, +0.0500]"


def test_seed_variance_widens_the_interval():
    queries = [f"q{i}" for i in range(200)]
    rng = np.random.default_rng(0)
    base = np.clip(rng.normal(0.5, 0.2, len(queries)), 0, 1)
    one = hierarchical_bootstrap([dict(zip(queries, base))])
    shifted = [dict(zip(queries, base + d)) for d in (-0.1, 0.0, 0.1)]
    three = hierarchical_bootstrap(shifted)
    assert abs(three["mean"] - one["mean"]) < 1e-9
    assert three["high"] - three["low"] > 2 * (one["high"] - one["low"])
    low, high = bootstrap_interval(base)
    assert (one["low"], one["high"]) == pytest.approx((low, high))  # one seed: the query bootstrap


def test_cluster_bootstrap_resamples_photographs_not_views():
    rng = np.random.default_rng(1)
    # 10 photographs, 16 views each; views of one photograph share most of their score
    clusters = {f"p{c}-v{v}": f"p{c}" for c in range(10) for v in range(16)}
    level = {f"p{c}": rng.normal(0.6, 0.2) for c in range(10)}
    aps = {q: float(np.clip(level[c] + rng.normal(0, 0.05), 0, 1)) for q, c in clusters.items()}
    by_photo = cluster_bootstrap(aps, clusters)
    by_view = bootstrap_interval(list(aps.values()))
    assert by_photo["clusters"] == 10 and by_photo["queries"] == 160
    assert by_photo["mean"] == pytest.approx(np.mean(list(aps.values())))
    assert by_photo["high"] - by_photo["low"] > 2.5 * (by_view[1] - by_view[0])  # honest: far wider
    shifted = {q: v - 0.05 for q, v in aps.items()}
    diff = cluster_bootstrap(aps, clusters, shifted)
    assert diff["mean"] == pytest.approx(0.05) and diff["low"] == pytest.approx(0.05) and diff["excludes_zero"]
    with pytest.raises(ValueError, match="every query needs a cluster"):
        cluster_bootstrap({"x": 1.0}, {})
