"""The kernel's time plan: TTA degraded only when the projection says so, search priced by pairs."""

from pathlib import Path

import numpy as np

from solution.kernel.plan import MARGIN, Plan, choose_tta, compared_pairs, degrade, time_search_unit
from solution.kernel.run import Prober

OFF = {"enabled": False}


def _cfg(flip=True, scales=("1/sqrt2", 1, "sqrt2"), **steps):
    cfg = {"scales": list(scales), "flip": flip, "image_size": 64, "combine": "mean"}
    for name in ("qe", "dba", "diffusion", "label_rerank"):
        cfg[name] = {"enabled": name in steps}
    return cfg


def _views(cfg):
    return len(cfg["scales"]) * (2 if cfg["flip"] else 1)


def test_degrade_drops_flip_then_scales():
    first = degrade(_cfg())
    assert first["flip"] is False and len(first["scales"]) == 3
    second = degrade(first)
    assert second["scales"] == [1]
    assert degrade(second) is None


def test_plan_keeps_the_full_tta_when_it_fits():
    # 6 views at 10 ms a view: 1,000 images take 60 s; a 100 s limit is enough.
    timed = []

    def per_image(cfg):
        timed.append(_views(cfg))
        return 0.01 * _views(cfg)

    cfg, plans = choose_tta(_cfg(), per_image, search_s=10, images_left=1000, elapsed=lambda: 5.0, limit_s=100)
    assert cfg["flip"] is True and len(cfg["scales"]) == 3 and timed == [6] and len(plans) == 1
    assert plans[0].total_s == 5.0 + (60 + 10) * MARGIN and plans[0].fits


def test_plan_drops_only_what_it_must():
    # 6 views: 60 s, 3 views: 30 s, 1 view: 10 s of extraction; with 20 s of search and a 60 s limit only
    # dropping flip is needed (5 + 1.1 * 50 = 60).
    clock = iter([0.0, 3.0, 5.0])
    cfg, plans = choose_tta(_cfg(), lambda c: 0.01 * _views(c), search_s=20, images_left=1000,
                            elapsed=lambda: next(clock), limit_s=60.5)
    assert cfg["flip"] is False and len(cfg["scales"]) == 3
    assert [p.fits for p in plans] == [False, True]
    assert plans[1].elapsed_s == 3.0  # each plan reads the clock when it is made


def test_plan_runs_the_cheapest_when_nothing_fits():
    cfg, plans = choose_tta(_cfg(), lambda c: 1.0, search_s=0, images_left=1000, elapsed=lambda: 0.0, limit_s=1)
    assert cfg["scales"] == [1] and cfg["flip"] is False and len(plans) == 3 and not plans[-1].fits


def test_search_cost_grows_with_index_times_queries():
    base = compared_pairs(100, 1000, 0, _cfg())
    assert base == 100 * 1000
    assert compared_pairs(200, 1000, 0, _cfg()) == 2 * base
    assert compared_pairs(100, 1000, 0, _cfg(qe=True)) == 2 * base
    assert compared_pairs(100, 1000, 0, _cfg(dba=True)) == base + 1000 * 1000
    assert compared_pairs(100, 1000, 500, _cfg(label_rerank=True)) == base + 1100 * 500
    assert compared_pairs(100, 1000, 500, _cfg()) == base  # train descriptors unused without label re-ranking


def test_search_unit_is_timed_after_a_warm_up():
    calls, ticks = [], iter([10.0, 12.0])

    def fake_knn(queries, database, k):
        calls.append((len(queries), len(database)))

    unit = time_search_unit(8, fake_knn, clock=lambda: next(ticks), n_index=2000, n_query=100)
    assert calls == [(64, 1000), (100, 2000)]  # a smaller warm-up call first, untimed
    assert np.isclose(unit, 2.0 / (2000 * 100 * 8))


def test_prober_takes_fresh_images_and_reuses_the_last_probe():
    pool = [Path(f"{i}.jpg") for i in range(10)]
    seen = []

    def describe(paths, cfg, desc):
        seen.append((desc, [int(p.stem) for p in paths]))
        return np.array([[int(p.stem), _views(cfg)] for p in paths], np.float32).reshape(-1, 2)

    ticks = iter(range(100))
    prober = Prober(describe, pool, probe=3, warmup=1, clock=lambda: float(next(ticks)))
    full, cheap = _cfg(), degrade(_cfg())
    assert prober(full) == 1 / 3
    assert prober(cheap) == 1 / 3
    # warm-up 0, probe 1-3, warm-up 4, probe 5-7: nothing read twice
    assert seen == [("warm-up", [0]), ("probe", [1, 2, 3]), ("warm-up", [4]), ("probe", [5, 6, 7])]
    out = prober.describe_all(cheap)
    assert seen[-1] == ("describe", [0, 1, 2, 3, 4, 8, 9])  # the probed 5-7 are reused
    assert out[:, 0].tolist() == list(range(10)) and set(out[:, 1]) == {3}
    assert prober.describe_all(full)[:, 1].tolist() == [6] * 10  # another TTA: everything described again


def test_plan_describe_names_the_figures():
    text = Plan(elapsed_s=12, per_image_s=0.02, images_left=500, search_s=30, limit_s=100).describe()
    assert "500 images x 20.0 ms" in text and "10s extraction" in text and "30s search" in text and "fits" in text
