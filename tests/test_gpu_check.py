"""gpu-check: one line and exit 0 without a GPU; its model check runs (here on CPU) with the default backbone."""

import torch

from solution import gpu_check
from solution.cli import main


def test_without_a_gpu_it_says_so_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["gpu-check"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "no GPU found" in out[0]


def test_the_model_check_builds_the_default_backbone_without_a_config_error():
    """It used to ask lite0's 432-dimensional REMAP for 512-D whitening and stop before printing a table."""
    row = gpu_check.check_model("tf_efficientnet_lite0", size=64, tuples=1, neg=1, extract_batch=2,
                                device=torch.device("cpu"))
    assert row["loss_finite"] and row["train_img_s"] > 0 and row["extract_img_s"] > 0 and row["amp"] == "off"
