"""The public run's memory rehearsal at the hidden 2021 counts: the arithmetic per GPU, and the one line
that stops a run whose hidden searches could not fit."""

import pytest

from solution.infer.search import rows_per_chunk, shortlist_size
from solution.kernel.contract import KernelError
from solution.kernel.rehearse import (
    CONTEXT_BYTES,
    T4_USABLE_BYTES,
    Stage,
    hidden_stages,
    rehearse,
    stage_bytes,
)

QUERIES, INDEX, TRAIN = 117_577, 761_757, 1_580_470


def _cfg(dtype="float16", dba=True, label=True):
    return {"topk": 100, "index": {"type": "flat", "dtype": dtype}, "dba": {"enabled": dba, "k": 10},
            "label_rerank": {"enabled": label, "k": 20}}


def test_the_hidden_stages_in_the_order_they_run():
    stages = hidden_stages(QUERIES, INDEX, TRAIN, _cfg())
    assert [(s.queries, s.database, s.k) for s in stages] == [
        (QUERIES + INDEX, TRAIN, 20), (INDEX, INDEX, 11), (QUERIES, INDEX, 100)]
    assert len(hidden_stages(QUERIES, INDEX, 0, _cfg())) == 2  # no train descriptors: no votes
    assert len(hidden_stages(QUERIES, INDEX, TRAIN, _cfg(dba=False, label=False))) == 1


def test_the_2021_search_on_two_t4s_by_hand():
    """761,757 x 2,048 float16 over two T4s: 380,879 rows a GPU, 1.45 GiB, held; a query chunk of 32,768
    float32 rows (256 MiB) and its float16 copy; a score block of 8,192 rows (1 GiB); the shortlist of 125."""
    out = stage_bytes(Stage("search", QUERIES, INDEX, 100), 2048, 2, 2, T4_USABLE_BYTES, half=True)
    chunk = rows_per_chunk(2048)
    assert chunk == 32_768
    assert out["held"] and out["slice_bytes"] == 380_879 * 2048 * 2
    parts = out["parts"]
    assert parts["database"] == 380_879 * 2048 * 2
    assert parts["queries"] == chunk * 2048 * 6
    assert parts["scores"] == chunk * 8_192 * 4 == 2**30
    assert parts["top-k"] == 2 * chunk * 2 * shortlist_size(100) * 12
    assert parts["rescoring"] == 2 * 2**28
    assert out["total"] == sum(parts.values()) + CONTEXT_BYTES
    assert 3.5 < out["total"] / 2**30 < 4.5  # fits a T4's 14.76 GiB with room


def test_a_slice_larger_than_half_the_card_is_streamed():
    """The train descriptors in float32 on one T4: 1.58M x 2,048 x 4 = 12.1 GiB, streamed a block at a time."""
    out = stage_bytes(Stage("votes", QUERIES + INDEX, TRAIN, 20), 2048, 4, 1, T4_USABLE_BYTES, half=False)
    assert not out["held"] and out["parts"]["database"] == 8_192 * 2048 * 4
    assert out["parts"]["rescoring"] == 0


def test_the_rehearsal_projects_on_the_cpu_and_uses_the_gpus_measurement(caplog):
    caplog.set_level("INFO", logger="solution.kernel")
    rows = rehearse(QUERIES, INDEX, TRAIN, 2048, _cfg())
    assert [r["held"] for r in rows] == [True, True, True] and all(r["measured_gib"] is None for r in rows)
    assert all(r["projected_gib"] < r["card_gib"] for r in rows)
    assert caplog.text.count("memory rehearsal") == 3 and "projected" in caplog.text
    measured = rehearse(QUERIES, INDEX, 0, 2048, _cfg(), run_stage=lambda stage: [3 * 2**30, 2 * 2**30],
                        cards=[("Tesla T4", T4_USABLE_BYTES, True)] * 2)
    assert [r["measured_gib"] for r in measured] == [3.0, 3.0]


def test_a_hidden_run_that_could_not_fit_stops_in_one_line():
    with pytest.raises(KernelError) as info:
        rehearse(QUERIES, INDEX, 0, 2048, _cfg(dtype="float32"), cards=[("small card", 3 * 2**29, True)])
    message = str(info.value)
    assert "could not fit" in message and "DBA" in message and "1.50 GiB card" in message and "\n" not in message
    with pytest.raises(KernelError, match="search"):
        rehearse(QUERIES, INDEX, 0, 2048, _cfg(dba=False), run_stage=lambda stage: [20 * 2**30])

