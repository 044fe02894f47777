"""gpu-check: one line and exit 0 without a GPU; its checks run the real paths, here on CPU at small sizes."""

import torch

from solution import gpu_check
from solution.cli import main

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
