"""`kernel-dryrun --synthetic 2021`: the kernel's own path after extraction on synthetic descriptors, here at
a small fraction of the real counts (the README's figures come from the full size)."""

import json

import numpy as np

from solution.cli import main
from solution.infer import retrieve, search
from solution.kernel.synthetic import SIZES, SlicedSearch


def test_the_synthetic_run_goes_through_the_kernel_path_and_reports_memory_and_time(tmp_path, capsys):
    work = tmp_path / "synthetic"
    assert main(["kernel-dryrun", "--config", "kernel-2021", "--synthetic", "2021", "--scale", "0.002",
                 "--slice-rows", "50", "--work", str(work)]) == 0
    out = capsys.readouterr().out
    assert "peak RSS" in out and "on a T4" in out and "valid" in out
    report = json.loads((work / "report.json").read_text())
    sizes = report["sizes"]
    assert sizes["index"] == int(SIZES["2021"]["index"] * 0.002) and sizes["dim"] == 2048
    assert report["train_memmap"] is True and report["train_dtype"] == "float16"  # never a float32 copy
    assert report["index_dtype"] == "float16"  # kernel-2021's index dtype, as Prober.describe_all writes it
    # the products the recipe implies: index votes, DBA, the search, the QE search, the query votes
    databases = [c["database"] for c in report["calls"]]
    assert databases == [sizes["train"], sizes["index"], sizes["index"], sizes["index"], sizes["train"]]
    assert all(c["searched"] == 50 and c["projected_s"] >= c["seconds"] for c in report["calls"])
    rows = (work / "working" / "submission.csv").read_text().splitlines()
    assert len(rows) == sizes["test"] + 1 and len(rows[1].split(",")[1].split()) == 100


def test_the_sliced_search_keeps_full_size_outputs_and_restores_the_real_one():
    database = np.random.default_rng(0).standard_normal((300, 8), dtype=np.float32)
    database /= np.linalg.norm(database, axis=1, keepdims=True)  # each row its own nearest neighbour
    sliced = SlicedSearch(rows=7)
    with sliced.installed():
        assert retrieve.search is sliced and search.search is sliced
        scores, ids = search.knn(database[:40], database, 5)
    assert search.search is sliced.real and retrieve.search is sliced.real
    assert scores.shape == ids.shape == (40, 5) and (ids[:7, 0] == np.arange(7)).all()
    assert sliced.calls[0]["queries"] == 40 and sliced.calls[0]["searched"] == 7
