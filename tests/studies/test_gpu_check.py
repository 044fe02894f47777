"""gpu-check: one line and exit 0 without a GPU; its checks run the real paths, here on CPU at small sizes."""

import torch

from solution.cli import main
from solution.studies import gpu_check

CPU = torch.device("cpu")


def test_without_a_gpu_it_says_so_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["gpu-check"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "no GPU found" in out[0]


def test_the_training_check_runs_the_real_step_on_the_default_backbone():
    """It used to ask lite0's 432-dimensional REMAP for 512-D whitening and stop before printing a table."""
    row = gpu_check.check_training("tf_efficientnet_lite0", CPU, size=64, tuples=1, neg=2, repeats=1)
    assert row["ok"] and row["img_s"] > 0 and row["bare_img_s"] > 0 and row["amp"] == "off"


def test_the_extraction_check_shards_merges_and_compares(tmp_path):
    row = gpu_check.check_extraction("tf_efficientnet_lite0", CPU, images=30, size=64, workers=0)
    assert row["ok"] and row["batch"] == 30 and row["ratio"] > 0


def test_the_kernel_check_runs_the_kernel_on_a_fake_input():
    row = gpu_check.check_kernel(CPU)
    assert row["ok"]


def test_the_search_check_uses_clustered_data_and_reaches_its_recall():
    """On Gaussian noise IVF-PQ's recall@10 is about 0.1 whatever the code; on clustered data the exact nearest
    neighbour is in IVF-PQ's top 10 for nearly every query."""
    rows = gpu_check.check_search(n=12_000, d=64, queries=300, k=10, nlist=64)
    assert [r["ok"] for r in rows] == [True, True, True], rows
    assert rows[0]["recall_at_10"] >= 0.99 and rows[1]["overlap_with_float32"] >= 0.99
    assert rows[2]["one_recall_at_10"] >= 0.9


def test_a_failing_check_is_a_row_not_a_lost_table():
    def broken():
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")

    rows = gpu_check.isolated("search", broken)
    assert rows == [{"check": "search", "ok": False,
                     "note": "RuntimeError: CUDA error: no kernel image is available for execution on the device"}]


def test_two_processes_are_read_together_and_killed_together_on_a_timeout():
    import subprocess
    import sys
    import time

    code = "import sys, time; sys.stderr.write('x' * 200000); sys.stderr.flush(); time.sleep(60)"
    processes = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
    started = time.perf_counter()
    outputs = gpu_check._communicate_all(processes, seconds=3)
    assert time.perf_counter() - started < 20 and all(p.poll() is not None for p in processes)
    assert all("timed out" in out for out in outputs)


def test_gpu_verify_without_a_gpu_runs_the_cpu_parts_and_says_so(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["gpu-verify", "--recipes", "toy-tiny"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("gpu-verify: no GPU found")
    assert any("plan toy-tiny" in line and "| True |" in line for line in out)
    assert any("synthetic 1% of 2021" in line and "| True |" in line for line in out)


def test_a_gpu_that_faiss_cannot_serve_gets_a_marked_row_and_the_rest(monkeypatch):
    """H100/H200 (9.0): faiss-gpu-cu12 has no code for them; exact search still runs, IVF-PQ's row says why."""
    from solution.infer import search

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: (9, 0))
    monkeypatch.setattr(search, "search_devices", lambda use_gpu=None: ["cpu"])  # no GPU here to run on
    monkeypatch.setattr(search, "faiss_gpu_usable", lambda: False)
    rows = gpu_check.check_search(n=3000, d=64, queries=50, k=10, nlist=16)
    assert rows[0]["ok"] is True and rows[1]["ok"] is True and rows[1]["overlap_with_float32"] >= 0.99
    assert rows[2]["ok"] == "n/a" and "compute capability 9.0" in rows[2]["note"]


def test_the_torch_floor_covers_the_apis_used():
    """torch.amp.GradScaler("cuda") needs 2.3 and plan's memory tracker 2.5: requirements.txt says so."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "requirements.txt").read_text()
    floor = tuple(int(v) for v in re.search(r"^torch>=(\d+)\.(\d+)", text, re.M).groups())
    assert floor >= (2, 5)
    from torch.distributed._tools.mem_tracker import MemTracker  # noqa: F401 - present in the installed torch


def test_gpu_verify_rehearses_the_kernels_memory_on_the_cards(monkeypatch):
    """The rehearsal's rows on a GPU: each 2021 search with its measured peak against the card; a card too
    small for one is a failed row with the kernel's own line, not a traceback."""
    from solution.kernel import rehearse
    from solution.studies import gpu_verify

    monkeypatch.setattr(rehearse, "gpu_cards", lambda: [("Tesla T4", rehearse.T4_USABLE_BYTES, True)] * 2)
    monkeypatch.setattr(rehearse, "gpu_stage_runner", lambda dim, dtype: lambda stage: [2 * 2**30, 2 * 2**30])
    rows = gpu_verify._rehearsal_rows()
    assert [r["ok"] for r in rows] == [True, True] and "measured 2.00 GiB" in rows[0]["figure"]
    monkeypatch.setattr(rehearse, "gpu_stage_runner", lambda dim, dtype: lambda stage: [20 * 2**30])
    (row,) = gpu_verify._rehearsal_rows()
    assert row["ok"] is False and "could not fit" in row["figure"]
