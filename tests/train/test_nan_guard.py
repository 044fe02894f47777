import torch

from solution.cli import main
from solution.train import loop


def test_nan_loss_stops_cleanly_and_keeps_last_good_checkpoint(tiny_root, tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    real = loop.triplet_loss

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(loop, "triplet_loss", poisoned)
    args = ["train", "--config", "toy-tiny", f"data.root={tiny_root}", f"run.dir={tmp_path}", "run.workers=0",
            "train.tuples_per_epoch=12", "train.tuples_per_step=2", "train.checkpoint_every=1",
            "train.eval_before=false", "train.val_landmarks=0"]
    assert main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]  # bars aside
    assert len(err) == 1 and err[0].startswith("error: loss became nan") and "last good checkpoint" in err[0]
    state = torch.load(tmp_path / "toy-tiny/checkpoint.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (0, 2)  # the two good steps, not the poisoned third
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())


def test_a_non_finite_gradient_stops_before_the_step(tiny_root, tmp_path, monkeypatch, capsys):
    """A finite loss whose gradient is infinite (sqrt at 0): without the guard the step writes NaN weights."""
    real = loop.triplet_loss

    def inf_gradient(*args, **kwargs):
        loss = real(*args, **kwargs)
        return loss + torch.sqrt(args[0].sum() * 0.0)  # value +0, d/dx = inf

    monkeypatch.setattr(loop, "triplet_loss", inf_gradient)
    args = ["train", "--config", "toy-tiny", f"data.root={tiny_root}", f"run.dir={tmp_path}", "run.workers=0",
            "train.tuples_per_epoch=6", "train.tuples_per_step=2", "train.eval_before=false", "train.val_landmarks=0"]
    assert main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert len(err) == 1 and err[0].startswith("error: the gradient norm became")
    assert "no checkpoint had been written yet" in err[0]  # the first step: nothing was kept, and it says so
    assert not (tmp_path / "toy-tiny/checkpoint.pt").exists()
