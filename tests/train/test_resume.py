"""A run killed with SIGKILL mid-epoch resumes from its last step checkpoint to the same weights."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from solution.cli import main

REPO = Path(__file__).resolve().parents[2]


def _args(root, run_dir):
    return ["--config", "toy-tiny", f"data.root={root}", f"run.dir={run_dir}", "run.workers=0",
            "train.epochs=2", "train.tuples_per_epoch=24", "train.tuples_per_step=2", "train.checkpoint_every=1",
            "train.eval_before=false", "train.val_landmarks=0"]


def _state(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, RuntimeError, EOFError):
        return None


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tiny_root, tmp_path):
    assert main(["train", *_args(tiny_root, tmp_path / "a")]) == 0
    reference = torch.load(tmp_path / "a/toy-tiny/checkpoint.pt", weights_only=True)["state_dict"]

    checkpoint = tmp_path / "b/toy-tiny/checkpoint.pt"
    process = subprocess.Popen([sys.executable, "-m", "solution", "train", *_args(tiny_root, tmp_path / "b")],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_at = None
    deadline = time.time() + 240
    while process.poll() is None and time.time() < deadline:
        state = _state(checkpoint) if checkpoint.exists() else None
        if state and state["epoch"] == 1 and state["step"] >= 2:  # inside the second epoch
            os.kill(process.pid, signal.SIGKILL)
            killed_at = (state["epoch"], state["step"])
            break
        time.sleep(0.05)
    process.wait()
    if killed_at is None:
        pytest.fail(f"the run ended (rc={process.returncode}) before it could be killed mid-epoch")
    assert process.returncode == -signal.SIGKILL

    assert main(["train", *_args(tiny_root, tmp_path / "b")]) == 0
    resumed = torch.load(checkpoint, weights_only=True)["state_dict"]
    for key, value in reference.items():
        assert torch.allclose(value.float(), resumed[key].float(), atol=1e-5), key
    rows = (tmp_path / "b/toy-tiny/metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]  # no duplicated epoch rows
