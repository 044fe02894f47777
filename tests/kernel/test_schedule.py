"""The kernel's time plan: settings given up one at a time, the cheapest mAP first, only while the projection
(counted from the notebook's start) says the run does not fit; search priced by pairs."""

from pathlib import Path

import numpy as np

from solution.kernel import schedule
from solution.kernel.run import Prober, notebook_clock
from solution.kernel.schedule import (
    MARGIN,
    RESERVE_S,
    Schedule,
    cheaper_options,
    choose_schedule,
    compared_pairs,
    extraction_cost,
    output_seconds,
    time_output_units,
    time_search_unit,
)

OFF = {"enabled": False}


def _cfg(flip=True, scales=("1/sqrt2", 1, "sqrt2"), image_size=512, **steps):
    cfg = {"scales": list(scales), "flip": flip, "image_size": image_size, "combine": "mean"}
    for name in ("qe", "dba", "diffusion", "superglobal", "label_rerank"):
        cfg[name] = {"enabled": name in steps, "m": 400, "k": 9}
    return cfg


def _views(cfg):
    return len(cfg["scales"]) * (2 if cfg["flip"] else 1)


def _per_image(base_s):
    """A probe whose time follows the modelled cost exactly: ``base_s`` for one 512 px view; records calls."""
    calls = []

    def probe(cfg, weights=None):
        calls.append(cfg)
        return base_s * extraction_cost(cfg, weights) / (512 * 512)

    return probe, calls


def _pairs_search(unit, n_query=100_000, n_index=750_000, n_train=0):
    return lambda cfg: compared_pairs(n_query, n_index, n_train, cfg) * unit


def test_the_plan_keeps_everything_when_it_fits():
    probe, calls = _per_image(0.001)
    cfg, plans = choose_schedule(_cfg(qe=True, dba=True), probe, lambda c: 10.0, images_left=1000,
                             elapsed=lambda: 5.0, limit_s=100, reserve_s=0)
    assert cfg == _cfg(qe=True, dba=True) and len(calls) == 1 and len(plans) == 1 and plans[0].fits
    assert plans[0].total_s == 5.0 + (1000 * 0.001 * extraction_cost(_cfg()) / 512**2 + 10) * MARGIN


def test_a_single_scale_recipe_gives_up_dba_first_at_the_2021_size():
    """kernel-2021: one scale, no flip, QE + DBA. DBA's 750k^2 pairs cost more per mAP than anything else."""
    probe, calls = _per_image(0.010)  # 10 ms an image: 8,500 s of extraction for 850k images
    search = _pairs_search(1e-11 * 2048)  # 200 GFLOPS at 2,048-D: each search 1,500 s, DBA 11,250 s
    single = _cfg(flip=False, scales=[1], qe=True, dba=True)
    cfg, plans = choose_schedule(single, probe, search, images_left=850_000, elapsed=lambda: 600.0, limit_s=20_000,
                             reserve_s=0)
    assert cfg["dba"]["enabled"] is False and cfg["qe"]["enabled"] is True and cfg["image_size"] == 512
    assert len(calls) == 1  # only search settings changed: no second probe
    assert [p.fits for p in plans] == [False, True]


# The ladder's mechanism under fixed costs (the costs themselves are the toy's measurements and move with it)
PINNED_COSTS = {"scale": 0.0915 / 2, "qe": 0.0212, "dba": 0.0210, "label_rerank": 0.0218}


def test_a_multi_scale_recipe_shrinks_extraction_and_keeps_the_search_steps(caplog, monkeypatch):
    for step, cost in PINNED_COSTS.items():
        monkeypatch.setitem(schedule.MAP_COST, step, cost)
    probe, calls = _per_image(0.010)  # 3 scales + flip: 70 ms an image, 59,500 s for 850k images
    search = _pairs_search(1e-15)  # search is nearly free: only extraction must shrink
    cfg, plans = choose_schedule(_cfg(qe=True, dba=True), probe, search, images_left=850_000,
                             elapsed=lambda: 0.0, limit_s=20_000, reserve_s=0)
    assert cfg["qe"]["enabled"] and cfg["dba"]["enabled"]  # search steps saved nothing worth their mAP
    assert not cfg["flip"] and caplog.text.index("dropping flip") < caplog.text.index("dropping image size")
    # without flip, a 384 px step saves 13,000 s for 0.030 and the sqrt2 scale 17,000 s for 0.046: size first
    assert cfg["image_size"] == 384 and len(cfg["scales"]) == 3
    assert plans[-1].fits and not plans[0].fits and len(calls) == len(plans)  # each change probed again


def test_zero_cost_steps_go_first_and_the_cheapest_plan_runs_when_nothing_fits(caplog):
    probe, _ = _per_image(10.0)
    cfg, plans = choose_schedule(_cfg(qe=True, dba=True, diffusion=True), probe, _pairs_search(1e-12),
                             images_left=1000, elapsed=lambda: 0.0, limit_s=1, weights=None, reserve_s=0)
    assert not plans[-1].fits and "no plan fits" in caplog.text and "running the cheapest" in caplog.text
    assert cfg["image_size"] == 256 and cfg["scales"] == [1] and not cfg["flip"]
    assert not any(cfg[s]["enabled"] for s in ("qe", "dba", "diffusion", "label_rerank"))
    assert caplog.text.index("dropping diffusion") < caplog.text.index("dropping flip")


def test_an_ensemble_drops_its_weakest_member_when_that_is_what_fits():
    weights = [1.0, 0.5, 0.25]
    probe, _ = _per_image(0.004)
    cfg, plans = choose_schedule(_cfg(flip=False, scales=[1], image_size=256), lambda c: probe(c, weights),
                             _pairs_search(1e-15), images_left=850_000, elapsed=lambda: 0.0, limit_s=2_000,
                             weights=weights, reserve_s=0)
    assert cfg["dropped_members"] == [2] and plans[-1].fits  # the 0.25 member, not the image size (at its floor)


def test_every_setting_is_on_the_ladder():
    steps = {step for step, _ in cheaper_options(_cfg(qe=True, dba=True, diffusion=True, superglobal=True,
                                                      label_rerank=True), weights=[1.0, 0.5])}
    assert steps == {"flip", "scale", "image_size", "qe", "dba", "diffusion", "superglobal", "label_rerank",
                     "member"}
    assert {step for step, _ in cheaper_options(_cfg(flip=False, scales=[1], image_size=256))} == set()


def test_the_clock_counts_from_the_notebook_start():
    ticks = iter([1000.0, 1042.0])
    elapsed = notebook_clock({"KERNEL_STARTED_AT": "900.0"}, clock=lambda: next(ticks))
    assert elapsed() == 100.0 and elapsed() == 142.0


def test_search_cost_grows_with_index_times_queries():
    base = compared_pairs(100, 1000, 0, _cfg())
    assert base == 100 * 1000
    assert compared_pairs(200, 1000, 0, _cfg()) == 2 * base
    assert compared_pairs(100, 1000, 0, _cfg(qe=True)) == 2 * base
    assert compared_pairs(100, 1000, 0, _cfg(dba=True)) == base + 1000 * 1000
    assert compared_pairs(100, 1000, 500, _cfg(label_rerank=True)) == base + 1100 * 500
    assert compared_pairs(100, 1000, 500, _cfg()) == base  # train descriptors unused without label re-ranking


def test_search_unit_is_timed_on_an_index_already_built_after_a_warm_up():
    """The upload (``build``) happens before the clock starts: only the search is priced (issue 28)."""
    calls, ticks = [], iter([10.0, 12.0])

    def build(database):
        calls.append(("build", database.shape, database.dtype.name))
        return "index"

    def fake_search(index, queries, k):
        calls.append(("search", index, len(queries), k))

    unit = time_search_unit(8, build, fake_search, "float16", clock=lambda: next(ticks), n_index=2000, n_query=100)
    assert calls == [("build", (2000, 8), "float16"), ("search", "index", 64, 10), ("search", "index", 100, 100)]
    assert np.isclose(unit, 2.0 / (2000 * 100 * 8))


def test_writing_and_the_spill_are_timed_and_priced(tmp_path):
    written = []
    ticks = iter([0.0, 4.0, 10.0, 10.0 + 64 * 2**20 * 1e-8])
    per_row, per_byte = time_output_units(written.append, str(tmp_path), rows=2_000, clock=lambda: next(ticks))
    assert written == [2_000] and per_row == 4.0 / 2_000 and np.isclose(per_byte, 1e-8)
    assert not list(tmp_path.iterdir())  # the spill sample is removed
    cfg = {**_cfg(dba=True), "index": {"dtype": "float16"}}
    seconds = output_seconds(117_577, 761_757, 2048, cfg, per_row, per_byte)
    assert np.isclose(seconds, 117_577 * per_row + 761_757 * 2048 * 2 * 1e-8)
    assert output_seconds(117_577, 761_757, 2048, {**cfg, "dba": OFF}, per_row, per_byte) == 117_577 * per_row


def test_the_reserve_and_the_output_are_in_the_plan():
    probe, _ = _per_image(0.001)
    cfg, plans = choose_schedule(_cfg(), probe, lambda c: 10.0, images_left=1000, elapsed=lambda: 5.0,
                             limit_s=10_000, other_s=lambda c: 20.0)
    extract = 1000 * 0.001 * extraction_cost(_cfg()) / 512**2
    assert plans[0].total_s == 5.0 + (extract + 10 + 20) * MARGIN + RESERVE_S
    assert "reserve" in plans[0].summary() and "writing/validation/spill" in plans[0].summary()
    _, tight = choose_schedule(_cfg(), probe, lambda c: 10.0, images_left=1000, elapsed=lambda: 5.0,
                           limit_s=RESERVE_S, other_s=lambda c: 20.0)
    assert not tight[0].fits  # what fits without the reserve does not fit with it


def test_prober_takes_fresh_images_and_reuses_the_last_probe():
    pool = [Path(f"{i}.jpg") for i in range(10)]
    seen = []

    def describe(paths, cfg, desc):
        seen.append((desc, [int(p.stem) for p in paths]))
        return np.array([[int(p.stem), _views(cfg)] for p in paths], np.float32).reshape(-1, 2)

    ticks = iter(range(100))
    prober = Prober(describe, pool, probe=3, warmup=1, clock=lambda: float(next(ticks)))
    full, cheap = _cfg(), {**_cfg(), "flip": False}
    assert prober(full) == 1 / 3
    assert prober(cheap) == 1 / 3
    # warm-up 0, probe 1-3, warm-up 4, probe 5-7: nothing read twice
    assert seen == [("warm-up", [0]), ("probe", [1, 2, 3]), ("warm-up", [4]), ("probe", [5, 6, 7])]
    out = prober.describe_all(cheap)
    assert seen[-1] == ("describe", [0, 1, 2, 3, 4, 8, 9])  # the probed 5-7 are reused
    assert out[:, 0].tolist() == list(range(10)) and set(out[:, 1]) == {3}
    assert prober.describe_all(full)[:, 1].tolist() == [6] * 10  # another TTA: everything described again


def test_plan_describe_names_the_figures():
    text = Schedule(elapsed_s=12, per_image_s=0.02, images_left=500, search_s=30, limit_s=100).summary()
    assert "500 images x 20.0 ms" in text and "10s extraction" in text and "30s search" in text and "fits" in text


def test_a_decode_bound_notebook_stops_giving_up_pixels_that_save_nothing(caplog, monkeypatch):
    """Every probe takes 50 ms an image whatever the scales (JPEG decoding on 4 vCPUs is the bound): after one
    extraction step shows no saving, the fitted line says pixels cost nothing and DBA goes instead."""
    for step, cost in PINNED_COSTS.items():
        monkeypatch.setitem(schedule.MAP_COST, step, cost)
    calls = []

    def decode_bound(cfg):
        calls.append(cfg)
        return 0.05

    cfg, plans = choose_schedule(_cfg(flip=False, dba=True), decode_bound, _pairs_search(1e-11 * 2048),
                             images_left=850_000, elapsed=lambda: 0.0, limit_s=60_000, reserve_s=0)
    assert len(calls) == 2  # one extraction step was tried (the 384 px step), then no more pixels
    assert cfg["image_size"] == 384 and len(cfg["scales"]) == 3
    assert cfg["dba"]["enabled"] is False and plans[-1].fits
    assert caplog.text.index("dropping image size") < caplog.text.index("dropping dba")


def test_the_measured_map_costs_are_the_filed_ablations_validation_gains():
    """MAP_COST's measured entries are the paired validation gains of docs/results/ablation-toy.json (the
    default checkpoint's ablation): re-running the ablation on a new default without updating them fails."""
    import json

    import pytest

    rows = json.loads((Path(__file__).resolve().parents[2] / "docs/results/ablation-toy.json").read_text())["rows"]
    gain = {row["step"]: round(row["selected_on"]["gain"]["diff"], 4) for row in rows if "gain" in row["selected_on"]}
    assert schedule.MAP_COST["scale"] == pytest.approx(gain["+ multi-scale"] / 2)  # two extra scales share it
    for step, name in (("qe", "+ alpha-QE"), ("dba", "+ DBA"), ("label_rerank", "+ label re-ranking")):
        assert schedule.MAP_COST[step] == pytest.approx(max(gain[name], 0.0)), step
